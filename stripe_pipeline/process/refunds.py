"""Where a ``charge.refunded`` event's refunds come from when the payload omits them.

Since API version 2022-11-15 a charge's ``refunds`` list is only present when
expanded, so the applier asks a :class:`RefundSource` (the rate-limited Stripe API
client, built elsewhere) for the charge's refunds. Its exceptions are the event's
failure: the caller classifies Stripe and connection errors as temporary and retries.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class RefundSource(Protocol):
    """Lists a charge's refunds (every page) as Stripe refund objects."""

    def list_charge_refunds(self, charge_id: str) -> list[dict[str, Any]]: ...
