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


def is_connection_failure(exc: BaseException) -> bool:
    """True when the database connection itself failed (gone, timed out, locked, deadlocked).

    Then the transaction cannot go on and the batch must roll back; any other error
    while recording a failure (a value the database refuses) stays with its event.
    """
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


def _storable(value: str) -> str:
    """NUL cannot be stored in PostgreSQL text or JSONB."""
    return value.replace("\x00", "\\x00")


def error_context(exc: BaseException, attempt: int, *, limit: int = 4000) -> dict[str, Any]:
    """What ``stripe_events.error_context`` keeps: class, message, traceback excerpt, attempt.

    A database error is described by the driver's first line (``DataError:
    StringDataRightTruncation: value too long ...``) and the start of its statement,
    not by SQLAlchemy's message, which is mostly the statement (parameters hidden).
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    context: dict[str, Any] = {
        "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": _storable(_message(exc))[:1000],
        "traceback": _storable(tb)[-limit:],
        "attempt": attempt,
        "kind": classify(exc),
    }
    statement = getattr(exc, "statement", None)
    if isinstance(statement, str):
        context["statement"] = " ".join(statement.split())[:300]
    return context


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    if orig is None or getattr(exc, "statement", None) is None:
        return str(exc)
    lines = str(orig).strip().splitlines()  # later lines (DETAIL) may quote values
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"
