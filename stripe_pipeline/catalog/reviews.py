"""Radar reviews (``stripe_reviews``): payments Radar or a person put on hold.

https://docs.stripe.com/api/radar/reviews/object

``review.opened`` / ``review.closed``. A review is open until approved, refunded,
refunded as fraud, disputed or redacted: ``closed_reason`` since 2024, before that
``reason`` took the closing reason. Stripe lists only open reviews
(``GET /v1/reviews``): a review closed while its event was lost is found by fetching
it. The fraud rules (``recover/fraud.py``) read this table.
"""

from __future__ import annotations

from collections.abc import Iterable

from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    Policy,
    Resource,
    Route,
    RowWrite,
    event_fact,
)
from stripe_pipeline.catalog.readers import boolean, integer, object_id, ref_id, text, unix_time
from stripe_pipeline.db.models import StripeReview

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeReview.__tablename__
CLOSING_REASONS = frozenset({"approved", "refunded", "refunded_as_fraud", "disputed", "redacted"})

COLUMNS = (
    Column("charge_id", K),
    Column("payment_intent_id", K),
    Column("open", N, audit=True),
    Column("reason", N, audit=True),
    Column("opened_reason", K),
    Column("closed_reason", N, audit=True),
    event_fact(
        "closed_at",
        K,
        "time of review.closed; the review object has no closing time",
        audit=True,
    ),
    Column("stripe_created", K),
    Column("livemode", N),
)


def apply_review_event(ctx: EventContext) -> Iterable[RowWrite]:
    """opened, closed."""
    review = ctx.obj
    is_open = boolean(review.get("open"))
    if is_open is None:
        is_open = ctx.event_type != "review.closed"
    reason = text(review.get("reason"))
    closed_reason = text(review.get("closed_reason"))
    if closed_reason is None and not is_open and reason in CLOSING_REASONS:
        closed_reason = reason  # before closed_reason, the reason said why it closed
    values = {
        "charge_id": ref_id(review.get("charge")),
        "payment_intent_id": ref_id(review.get("payment_intent")),
        "open": is_open,
        "reason": reason,
        "opened_reason": text(review.get("opened_reason")),
        "closed_reason": closed_reason,
        "closed_at": unix_time(ctx.created) if ctx.event_type == "review.closed" else None,
        "stripe_created": integer(review.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(review), values)]


RESOURCE = Resource(
    object_type="review",
    table=StripeReview.__table__,
    key="stripe_review_id",
    columns=COLUMNS,
    # no SQL twin: reviews are few (a fraction of a percent of payments)
    routes=(Route(("review.*",), apply_review_event, frozenset({"review"})),),
    listings=(Listing("reviews", "/v1/reviews", read_as="review.updated"),),
    fetch=(Fetch("/v1/reviews/{id}", "review.updated"),),
    docs="https://docs.stripe.com/api/radar/reviews/object",
)
