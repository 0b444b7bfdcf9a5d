"""Error classes of the plan's error-recovery diagram, and the classifier.

Temporary errors are retried with backoff; permanent ones go to a support ticket at
once. Anything unknown is treated as temporary until max retries, then escalated.
"""

from __future__ import annotations

import traceback
from typing import Any, Literal

from stripe_pipeline.stripe_api.errors import NotFound

ErrorKind = Literal["temporary", "permanent"]


class TemporaryError(Exception):
    """Worth retrying later: a lock, a timeout, an unreachable peer, a 429 or 5xx."""


class PermanentError(Exception):
    """Retrying cannot help: an unparseable payload or a broken invariant."""


def classify(exc: BaseException) -> ErrorKind:
    """Map an exception to the diagram's TempError / PermError branch."""
    if isinstance(exc, PermanentError):
        return "permanent"
    if isinstance(exc, TemporaryError):
        return "temporary"
    if isinstance(exc, NotFound):  # Stripe's 404: the object is not there, retrying cannot help
        return "permanent"
    # SQLAlchemy and Stripe are imported lazily: classification must not drag them in
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return "temporary"
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
        return "permanent"
    try:
        import stripe
    except ImportError:  # pragma: no cover
        stripe = None
    if stripe is not None:
        if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
            return "temporary"
        if isinstance(exc, stripe.APIError):
            status = getattr(exc, "http_status", None)
            return "temporary" if status is None or status >= 500 else "permanent"
        if isinstance(exc, stripe.StripeError):
            status = getattr(exc, "http_status", None)
            return "temporary" if status in (429, None) or (status or 0) >= 500 else "permanent"
    if isinstance(exc, KeyError | TypeError | ValueError):
        return "permanent"
    return "temporary"


def error_context(exc: BaseException, attempt: int, *, limit: int = 4000) -> dict[str, Any]:
    """What ``stripe_events.error_context`` keeps: class, message, traceback excerpt, attempt."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:1000],
        "traceback": tb[-limit:],
        "attempt": attempt,
        "kind": classify(exc),
    }
