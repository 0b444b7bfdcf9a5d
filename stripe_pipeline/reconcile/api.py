"""What reconciliation needs from a Stripe client: streamed listings, fetches by id,
and a call counter.

A Protocol, so tests and benchmarks can hand in any object with this shape, and the
core never depends on how the real client retries or rate-limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from stripe_pipeline.stripe_api.errors import NotFound

__all__ = ["ListingApi", "NotFound", "list_window"]


class ListingApi(Protocol):
    def list_all(
        self,
        resource: str,
        *,
        created_gte: int | None = None,
        created_lte: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every object of a list endpoint (a resource name or a ``/v1/...`` path);
        raises :class:`NotFound` when Stripe answers 404 (the list's parent is gone)."""
        ...

    def get(self, path: str) -> dict[str, Any]:
        """One object; raises :class:`NotFound` when Stripe answers 404."""
        ...

    @property
    def calls(self) -> int: ...


def list_window(
    api: ListingApi,
    resource: str,
    start: int | None,
    end: int | None,
    *,
    server_filter: bool = True,
    params: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Objects created in ``[start, end]``, filtered client-side as well.

    ``server_filter=False`` is for endpoints and fakes (localstripe) that refuse
    ``created[...]``: everything is listed and the window applied here.
    """
    if server_filter:
        source = api.list_all(resource, created_gte=start, created_lte=end, params=params or None)
    else:
        source = api.list_all(resource, params=params or None)
    for obj in source:
        created = obj.get("created")
        if isinstance(created, int) and (
            (start is not None and created < start) or (end is not None and created > end)
        ):
            continue
        yield obj
