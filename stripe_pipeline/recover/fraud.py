"""Fraud rules over recent Stripe events and Radar's objects, as data with thresholds.

Burst and card rules read ``stripe_events`` (and the payment/subscription tables for
the dispute rule); Radar's verdicts are read from their tables
(``stripe_early_fraud_warnings``, ``stripe_reviews``): what Stripe says now, whatever
order the events came in, and restored by the nightly reconciliation when an event
was lost. Rules run on any backend and any number of times: each hit has a dedupe
key (rule, customer, day, event or object), so a rescan of the same window finds
nothing new. A new hit raises a high-priority ticket and flags the customer
(``stripe_customers.fraud_flagged_at`` / ``fraud_reason``); recovery retries skip
flagged customers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.db.engine import begin_write
from stripe_pipeline.db.models import (
    FraudRuleHit,
    StripeCustomer,
    StripeEarlyFraudWarning,
    StripeEvent,
    StripePayment,
    StripeReview,
    StripeSubscription,
)
from stripe_pipeline.support.tickets import TicketRequest, open_ticket

EVENTS = StripeEvent.__table__
HITS = FraudRuleHit.__table__
CUSTOMERS = StripeCustomer.__table__
PAYMENTS = StripePayment.__table__
SUBSCRIPTIONS = StripeSubscription.__table__
WARNINGS = StripeEarlyFraudWarning.__table__
REVIEWS = StripeReview.__table__

FAILED_PAYMENT_EVENTS = (
    "payment_intent.payment_failed",
    "charge.failed",
    "invoice.payment_failed",
)
ACTIVE_SUBSCRIPTION = ("active", "trialing", "past_due")
ACTIVE_PAYMENT = ("processing", "requires_capture", "requires_confirmation", "requires_action")


@dataclass(frozen=True)
class FraudRule:
    """``kind`` selects the evaluator; the rest are its parameters.

    ``burst``: at least ``threshold`` of ``event_types`` for one customer within ``window``.
    ``distinct_cards``: at least ``threshold`` different card fingerprints attached to one
    customer within ``window``. ``event``: any one of ``event_types`` is a hit.
    ``dispute_with_active``: a dispute on a customer with at least ``threshold`` other
    active payments or subscriptions. ``early_fraud_warning``: any Radar early fraud
    warning (its table). ``review_closed``: a Radar review closed for one of
    ``reasons`` (its table).
    """

    name: str
    kind: str
    threshold: int = 1
    window: timedelta = timedelta(minutes=10)
    event_types: tuple[str, ...] = ()
    priority: str = "high"
    description: str = ""
    reasons: tuple[str, ...] = ()


RULES: tuple[FraudRule, ...] = (
    FraudRule(
        "card_testing_attachments",
        "burst",
        threshold=5,
        window=timedelta(minutes=10),
        event_types=("payment_method.attached",),
        description="many cards attached to one customer within minutes (card testing)",
    ),
    FraudRule(
        "card_testing_failures",
        "burst",
        threshold=5,
        window=timedelta(minutes=10),
        event_types=FAILED_PAYMENT_EVENTS,
        description="many failed payments for one customer within minutes (card testing)",
    ),
    FraudRule(
        "many_distinct_cards",
        "distinct_cards",
        threshold=4,
        window=timedelta(days=1),
        event_types=("payment_method.attached",),
        description="many distinct cards used by one customer within a day",
    ),
    FraudRule(
        "early_fraud_warning",
        "early_fraud_warning",
        description="the card issuer reported fraud on a charge (Radar early fraud warning)",
    ),
    FraudRule(
        "review_refunded_as_fraud",
        "review_closed",
        reasons=("refunded_as_fraud",),
        description="a payment Radar held for review was refunded as fraud",
    ),
    FraudRule(
        "dispute_with_active_business",
        "dispute_with_active",
        threshold=1,
        event_types=("charge.dispute.created",),
        description="a dispute opened on a customer who still has active payments or subscriptions",
    ),
)


@dataclass(frozen=True)
class Hit:
    rule: FraudRule
    customer_id: str | None
    dedupe_key: str
    observed: int
    stripe_event_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ev:
    event_id: str
    type: str
    created: int
    obj: dict[str, Any]


def _payload(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else (value or {})


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def load_events(conn: Connection, types: Iterable[str], since: int, until: int) -> list[_Ev]:
    """Events of the given types created in ``[since, until]``, oldest first."""
    rows = conn.execute(
        select(
            EVENTS.c.stripe_event_id,
            EVENTS.c.event_type,
            EVENTS.c.stripe_created,
            EVENTS.c.payload,
        )
        .where(
            EVENTS.c.event_type.in_(sorted(set(types))),
            EVENTS.c.stripe_created >= since,
            EVENTS.c.stripe_created <= until,
        )
        .order_by(EVENTS.c.stripe_created, EVENTS.c.id)
    )
    return [
        _Ev(r[0], r[1], r[2], (_payload(r[3]).get("data") or {}).get("object") or {}) for r in rows
    ]


def _customer_of(conn: Connection, obj: Mapping[str, Any]) -> str | None:
    """The customer of an event object, directly or through its payment."""
    customer = _id(obj.get("customer"))
    if customer:
        return customer
    pi, charge = _id(obj.get("payment_intent")), _id(obj.get("charge"))
    if not (pi or charge):
        return None
    conditions = []
    if pi:
        conditions.append(PAYMENTS.c.payment_intent_id == pi)
    if charge:
        conditions.append(PAYMENTS.c.charge_id == charge)
    return conn.execute(select(PAYMENTS.c.customer_id).where(or_(*conditions)).limit(1)).scalar()


def _burst(rule: FraudRule, events: Sequence[_Ev], conn: Connection) -> list[Hit]:
    by_customer: dict[str, list[_Ev]] = defaultdict(list)
    for ev in events:
        customer = _customer_of(conn, ev.obj)
        if customer:
            by_customer[customer].append(ev)
    hits = []
    span = rule.window.total_seconds()
    for customer, evs in by_customer.items():
        start = 0
        for end, ev in enumerate(evs):
            while ev.created - evs[start].created > span:
                start += 1
            count = end - start + 1
            if count >= rule.threshold:
                hits.append(
                    Hit(
                        rule,
                        customer,
                        f"{rule.name}:{customer}:{_day(evs[start].created)}",
                        count,
                        ev.event_id,
                        {"first_event_at": evs[start].created, "last_event_at": ev.created},
                    )
                )
                break
    return hits


def _distinct_cards(rule: FraudRule, events: Sequence[_Ev], conn: Connection) -> list[Hit]:
    by_customer: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for ev in events:
        customer = _customer_of(conn, ev.obj)
        card = (ev.obj.get("card") or {}).get("fingerprint") or _id(ev.obj)
        if customer and card:
            by_customer[customer].append((ev.created, card, ev.event_id))
    hits = []
    span = rule.window.total_seconds()
    for customer, items in by_customer.items():
        for i, (created, _, _) in enumerate(items):
            cards = {c for t, c, _ in items[i:] if t - created <= span}
            if len(cards) >= rule.threshold:
                hits.append(
                    Hit(
                        rule,
                        customer,
                        f"{rule.name}:{customer}:{_day(created)}",
                        len(cards),
                        items[-1][2],
                        {"distinct_cards": len(cards)},
                    )
                )
                break
    return hits


def _single_event(rule: FraudRule, events: Sequence[_Ev], conn: Connection) -> list[Hit]:
    return [
        Hit(
            rule,
            _customer_of(conn, ev.obj),
            f"{rule.name}:{ev.event_id}",
            1,
            ev.event_id,
            {"charge": _id(ev.obj.get("charge")), "fraud_type": ev.obj.get("fraud_type")},
        )
        for ev in events
    ]


def _dispute_with_active(rule: FraudRule, events: Sequence[_Ev], conn: Connection) -> list[Hit]:
    hits = []
    for ev in events:
        customer = _customer_of(conn, ev.obj)
        if not customer:
            continue
        disputed = _id(ev.obj.get("payment_intent")) or _id(ev.obj.get("charge"))
        subscriptions = conn.execute(
            select(func.count()).where(
                SUBSCRIPTIONS.c.customer_id == customer,
                SUBSCRIPTIONS.c.status.in_(ACTIVE_SUBSCRIPTION),
            )
        ).scalar_one()
        payments = conn.execute(
            select(func.count()).where(
                PAYMENTS.c.customer_id == customer,
                PAYMENTS.c.status.in_(ACTIVE_PAYMENT),
                PAYMENTS.c.payment_intent_id != (disputed or ""),
                or_(PAYMENTS.c.charge_id.is_(None), PAYMENTS.c.charge_id != (disputed or "")),
            )
        ).scalar_one()
        if subscriptions + payments >= rule.threshold:
            hits.append(
                Hit(
                    rule,
                    customer,
                    f"{rule.name}:{ev.event_id}",
                    subscriptions + payments,
                    ev.event_id,
                    {
                        "dispute": _id(ev.obj),
                        "active_subscriptions": subscriptions,
                        "active_payments": payments,
                    },
                )
            )
    return hits


EVALUATORS = {
    "burst": _burst,
    "distinct_cards": _distinct_cards,
    "event": _single_event,
    "dispute_with_active": _dispute_with_active,
}


def _event_id(row: Any) -> str | None:
    """The Stripe event that last wrote a row (none when reconciliation did)."""
    found = row.last_event_id
    return found if isinstance(found, str) and found.startswith("evt_") else None


def _recent(table: Any, stripe_time: Any, since: int, until: int) -> Any:
    """Rows whose Stripe time (``stripe_time``, a condition) is in the window, or that
    were stored or changed in it: an object the nightly run restored days after its
    lost event is screened by the next scan."""
    stored = table.c.updated_at
    return or_(stripe_time, and_(stored >= _at(since), stored < _at(until + 1)))


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _early_fraud_warnings(rule: FraudRule, conn: Connection, since: int, until: int) -> list[Hit]:
    w = WARNINGS.c
    found = conn.execute(
        select(
            w.stripe_early_fraud_warning_id,
            w.charge_id,
            w.payment_intent_id,
            w.fraud_type,
            w.last_event_id,
        )
        .where(_recent(WARNINGS, w.stripe_created.between(since, until), since, until))
        .order_by(w.stripe_created, w.id)
    )
    return [
        Hit(
            rule,
            _customer_of(conn, {"charge": row.charge_id, "payment_intent": row.payment_intent_id}),
            f"{rule.name}:{row.stripe_early_fraud_warning_id}",
            1,
            _event_id(row),
            {
                "early_fraud_warning": row.stripe_early_fraud_warning_id,
                "charge": row.charge_id,
                "fraud_type": row.fraud_type,
            },
        )
        for row in found
    ]


def _closed_reviews(rule: FraudRule, conn: Connection, since: int, until: int) -> list[Hit]:
    r = REVIEWS.c
    found = conn.execute(
        select(
            r.stripe_review_id,
            r.charge_id,
            r.payment_intent_id,
            r.closed_reason,
            r.opened_reason,
            r.last_event_id,
        )
        .where(
            r.open.is_(False),
            r.closed_reason.in_(rule.reasons),
            _recent(
                REVIEWS, and_(r.closed_at >= _at(since), r.closed_at < _at(until + 1)), since, until
            ),
        )
        .order_by(r.stripe_created, r.id)
    )
    return [
        Hit(
            rule,
            _customer_of(conn, {"charge": row.charge_id, "payment_intent": row.payment_intent_id}),
            f"{rule.name}:{row.stripe_review_id}",
            1,
            _event_id(row),
            {
                "review": row.stripe_review_id,
                "charge": row.charge_id,
                "closed_reason": row.closed_reason,
                "opened_reason": row.opened_reason,
            },
        )
        for row in found
    ]


# rules over Radar's tables: (rule, conn, since, until) -> hits
TABLE_EVALUATORS = {
    "early_fraud_warning": _early_fraud_warnings,
    "review_closed": _closed_reviews,
}


def evaluate(
    conn: Connection,
    *,
    since: int,
    until: int,
    rules: Sequence[FraudRule] = RULES,
) -> list[Hit]:
    """All rule hits among events created in ``[since, until]`` (windows look back
    further) and Radar objects created, closed or stored in it."""
    hits: list[Hit] = []
    for rule in rules:
        if rule.kind in TABLE_EVALUATORS:
            hits.extend(TABLE_EVALUATORS[rule.kind](rule, conn, since, until))
            continue
        windowed = rule.kind in ("burst", "distinct_cards")
        lookback = int(rule.window.total_seconds()) if windowed else 0
        events = load_events(conn, rule.event_types, since - lookback, until)
        hits.extend(EVALUATORS[rule.kind](rule, events, conn))
    return hits


def record_hit(conn: Connection, hit: Hit, *, now: datetime, actor: str) -> int | None:
    """Store a new hit, open its ticket and flag the customer; ``None`` if already known."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    hit_id = conn.execute(
        dialect.insert(HITS)
        .values(
            rule=hit.rule.name,
            customer_id=hit.customer_id,
            dedupe_key=hit.dedupe_key[:512],
            stripe_event_id=hit.stripe_event_id,
            observed=hit.observed,
            threshold=hit.rule.threshold,
            details=hit.details or None,
            detected_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(HITS.c.id)
    ).scalar()
    if hit_id is None:
        return None
    ticket = open_ticket(
        conn,
        TicketRequest(
            issue_type="fraud_suspected",
            dedupe_key=f"fraud:{hit.rule.name}:{hit.customer_id or hit.dedupe_key}",
            title=f"Fraud rule {hit.rule.name} hit for customer {hit.customer_id or '?'}",
            priority=hit.rule.priority,
            customer_id=hit.customer_id,
            stripe_event_id=hit.stripe_event_id,
            details={
                "rule": hit.rule.name,
                "description": hit.rule.description,
                "observed": hit.observed,
                "threshold": hit.rule.threshold,
                **hit.details,
            },
        ),
        actor=actor,
    )
    conn.execute(update(HITS).where(HITS.c.id == hit_id).values(support_ticket_id=ticket.ticket_id))
    if hit.customer_id:
        _flag_customer(conn, hit, now=now, actor=actor)
    return hit_id


def _flag_customer(conn: Connection, hit: Hit, *, now: datetime, actor: str) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(  # the customer may not be in our tables yet: keep the flag anyway
        dialect.insert(CUSTOMERS)
        .values(stripe_customer_id=hit.customer_id)
        .on_conflict_do_nothing(index_elements=["stripe_customer_id"])
    )
    flagged = conn.execute(
        update(CUSTOMERS)
        .where(
            CUSTOMERS.c.stripe_customer_id == hit.customer_id,
            CUSTOMERS.c.fraud_flagged_at.is_(None),
        )
        .values(fraud_flagged_at=now, fraud_reason=hit.rule.name[:255], updated_at=now)
        .returning(CUSTOMERS.c.id)
    ).scalar()
    if flagged is not None:
        record(
            conn,
            [
                AuditEntry(
                    actor=actor,
                    action="customer_fraud_flagged",
                    object_type="customer",
                    object_id=hit.customer_id,
                    stripe_event_id=hit.stripe_event_id,
                    before={"fraud_flagged_at": None},
                    after={"fraud_flagged_at": now.isoformat(), "fraud_reason": hit.rule.name},
                    details={"observed": hit.observed, "threshold": hit.rule.threshold},
                )
            ],
        )


@dataclass
class ScanResult:
    scanned_from: int
    scanned_to: int
    hits: list[Hit]
    new_hit_ids: list[int]

    @property
    def new_hits(self) -> int:
        return len(self.new_hit_ids)

    def by_rule(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for hit in self.hits:
            counts[hit.rule.name] += 1
        return dict(counts)


def scan(
    engine: Engine,
    *,
    lookback: timedelta = timedelta(hours=24),
    now: datetime | None = None,
    rules: Sequence[FraudRule] = RULES,
    actor: str = "fraud_rules",
) -> ScanResult:
    """Evaluate every rule over recent events and act on new hits, in one transaction."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    until = int(now.timestamp())
    since = until - int(lookback.total_seconds())
    with begin_write(engine) as conn:  # the rules read, their hits write
        hits = evaluate(conn, since=since, until=until, rules=rules)
        new_ids = [i for h in hits if (i := record_hit(conn, h, now=now, actor=actor))]
    return ScanResult(since, until, hits, new_ids)
