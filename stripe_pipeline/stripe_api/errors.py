"""Errors of the Stripe API client that callers act on, free of the stripe library."""

from __future__ import annotations


class NotFound(LookupError):
    """Stripe answered 404: the object does not exist (or no longer does)."""
