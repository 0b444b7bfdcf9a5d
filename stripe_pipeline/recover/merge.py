"""One failure, one recovery: merging recoveries whose invoice <-> payment link came late.

On a basil account (API version 2025-03-31.basil on) a failed subscription payment
arrives as ``invoice.payment_failed`` (an invoice that names no PaymentIntent) and
``payment_intent.payment_failed`` / ``charge.failed`` (a PaymentIntent that names no
invoice); no invoice payment event fires for a failed attempt. When processing can
look the invoice payment up (a Stripe API client is configured), the link is stored
before dunning sees either event, and both name one recovery, keyed by the invoice.
Without it each opens its own: ``invoice:<id>`` and ``payment_intent:<id>``.

Once the link is known (an ``invoice_payment.paid`` event, an invoice's expanded
payments, the nightly listing of invoice payments), the PaymentIntent's recovery is
merged into the invoice's: the survivor (the invoice's, else the oldest) takes the
missing facts, the attempts made so far and the most severe strategy; the duplicate
is closed as ``canceled`` with a ``recovery_merged`` audit row naming the survivor,
and its ticket is resolved. When one half had already recovered (its success event
came before the link), that one survives and the other is closed as merged, so the
case counts as recovered once. Retrying cards charges money, so the retry run merges
whatever it can before it claims anything (``merge_all_linked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from stripe_pipeline.recover.open import (
    INVOICES,
    LIVE_STATUSES,
    PAYMENTS,
    RECOVERIES,
    RecoveryDecision,
    _jsonable,
    _utc,
    apply_strategy,
    audit_recovery,
)
from stripe_pipeline.recover.strategies import DEFAULT_POLICY, RecoveryPolicy
from stripe_pipeline.support.tickets import resolve_ticket

# facts a survivor takes from a duplicate when it does not know them
FACTS = (
    "payment_intent_id",
    "customer_id",
    "payment_method_id",
    "failure_code",
    "decline_code",
    "amount_minor",
    "currency",
)


def merge_linked(
    conn: Connection,
    *,
    payment_intent_id: str,
    invoice_id: str,
    policy: RecoveryPolicy = DEFAULT_POLICY,
    actor: str = "recovery",
    stripe_event_id: str | None = None,
    now: datetime | None = None,
) -> RecoveryDecision | None:
    """Make the recoveries of this invoice and this PaymentIntent one recovery, keyed by
    the invoice. ``None`` when there is nothing to merge or fill.

    A recovery that already ``recovered`` settles the failure: it survives, and the
    others (live, or recovered by the other half's success event before the link was
    known) are closed as merged into it, so the case counts as recovered once."""
    now = _utc(now)
    r = RECOVERIES.c
    rows = [
        dict(row)
        for row in conn.execute(
            select(RECOVERIES)
            .where(
                r.status.in_((*LIVE_STATUSES, "recovered")),
                or_(
                    r.invoice_id == invoice_id,
                    and_(r.invoice_id.is_(None), r.payment_intent_id == payment_intent_id),
                ),
            )
            .order_by(r.id)
            .with_for_update()
        ).mappings()
    ]
    live = [row for row in rows if row["status"] in LIVE_STATUSES]
    if not live and len(rows) < 2:
        return None
    key = f"invoice:{invoice_id}"
    recovered = [row for row in rows if row["status"] == "recovered"]
    pool = recovered or rows
    keep = next((row for row in pool if row["recovery_key"] == key), pool[0])
    duplicates = [row for row in rows if row["id"] != keep["id"]]
    fill = _link_facts(keep, duplicates, key, invoice_id, payment_intent_id)
    if not duplicates and not fill:
        return None
    for duplicate in duplicates:  # closed first: the survivor may take their key
        _close_duplicate(conn, duplicate, keep["id"], actor, stripe_event_id, now)
    details = {
        "invoice_id": invoice_id,
        "payment_intent_id": payment_intent_id,
        "merged": [row["id"] for row in duplicates],
    }
    current = policy.strategy(keep["recovery_strategy"])
    if keep["status"] in LIVE_STATUSES and duplicates:
        fill["attempt_count"] = sum(row["attempt_count"] for row in rows)
        last = [row["last_attempt_at"] for row in rows if row["last_attempt_at"] is not None]
        if last:
            fill["last_attempt_at"] = max(last)
        due = [row["next_attempt_at"] for row in rows if row["next_attempt_at"] is not None]
        if keep["status"] == "open" and due:  # never sooner than either schedule said
            fill["next_attempt_at"] = max(due)
        worst = max(
            (policy.strategy(row["recovery_strategy"]) for row in duplicates),
            key=lambda s: s.severity,
        )
        if keep["status"] in ("open", "awaiting_customer") and worst.severity > current.severity:
            source = max(
                duplicates, key=lambda row: policy.strategy(row["recovery_strategy"]).severity
            )
            decision = apply_strategy(
                conn,
                {**keep, **fill},
                worst,
                source["last_error_type"] or worst.name,
                now=now,
                actor=actor,
                reason="merged",
                stripe_event_id=stripe_event_id,
                extra=fill,
            )
            decision.action = "merged"
            return decision
    if fill:
        conn.execute(update(RECOVERIES).where(r.id == keep["id"]).values(**fill, updated_at=now))
    audit_recovery(
        conn,
        "recovery_merged" if duplicates else "recovery_linked",
        keep["id"],
        actor=actor,
        stripe_event_id=stripe_event_id,
        before=_jsonable({k: keep[k] for k in fill}),
        after=fill,
        details=details,
    )
    return RecoveryDecision(
        keep["id"], "merged" if duplicates else "linked", keep["status"], current.name
    )


def _link_facts(
    keep: Mapping[str, Any],
    duplicates: list[dict[str, Any]],
    key: str,
    invoice_id: str,
    payment_intent_id: str,
) -> dict[str, Any]:
    """What the survivor learns: the invoice's key and the link, and the facts only a
    duplicate knew (its card, its decline)."""
    fill: dict[str, Any] = {}
    if keep["recovery_key"] != key:
        fill["recovery_key"] = key
    if keep["invoice_id"] is None:
        fill["invoice_id"] = invoice_id
    if keep["payment_intent_id"] is None:
        fill["payment_intent_id"] = payment_intent_id
    for duplicate in duplicates:
        for name in FACTS:
            if keep[name] is None and fill.get(name) is None and duplicate[name] is not None:
                fill[name] = duplicate[name]
    return fill


def _close_duplicate(
    conn: Connection,
    duplicate: Mapping[str, Any],
    survivor_id: int,
    actor: str,
    stripe_event_id: str | None,
    now: datetime,
) -> None:
    closed = {"status": "canceled", "next_attempt_at": None, "updated_at": now}
    if duplicate["closed_at"] is None:
        closed["closed_at"] = now
    conn.execute(update(RECOVERIES).where(RECOVERIES.c.id == duplicate["id"]).values(closed))
    if duplicate["support_ticket_id"] is not None:
        resolve_ticket(
            conn,
            duplicate["support_ticket_id"],
            resolution="auto_closed",
            note=f"recovery merged into recovery {survivor_id} (same invoice)",
            actor=actor,
        )
    audit_recovery(
        conn,
        "recovery_merged",
        duplicate["id"],
        actor=actor,
        stripe_event_id=stripe_event_id,
        before={"status": duplicate["status"], "recovery_key": duplicate["recovery_key"]},
        after={"status": "canceled"},
        details={"merged_into": survivor_id, "attempt_count": duplicate["attempt_count"]},
    )


def merge_all_linked(
    conn: Connection,
    *,
    policy: RecoveryPolicy = DEFAULT_POLICY,
    actor: str = "recovery",
    now: datetime | None = None,
) -> list[RecoveryDecision]:
    """Merge every live recovery of a PaymentIntent whose invoice is now known (from the
    payment's ``invoice_id`` or an invoice's ``payment_intent_id``): links that came
    through reconciliation, which runs no post-apply hooks. One query when there is
    nothing to merge."""
    r, p, i = RECOVERIES.c, PAYMENTS.c, INVOICES.c
    invoice = func.coalesce(p.invoice_id, i.stripe_invoice_id)
    pairs = conn.execute(
        select(r.payment_intent_id, func.min(invoice))
        .select_from(
            RECOVERIES.outerjoin(PAYMENTS, p.payment_intent_id == r.payment_intent_id).outerjoin(
                INVOICES, i.payment_intent_id == r.payment_intent_id
            )
        )
        .where(
            r.status.in_(LIVE_STATUSES),
            r.invoice_id.is_(None),
            r.payment_intent_id.is_not(None),
            invoice.is_not(None),
        )
        .group_by(r.payment_intent_id)
        .order_by(r.payment_intent_id)
    ).all()
    decisions = []
    for payment_intent_id, invoice_id in pairs:
        decision = merge_linked(
            conn,
            payment_intent_id=payment_intent_id,
            invoice_id=invoice_id,
            policy=policy,
            actor=actor,
            now=now,
        )
        if decision is not None:
            decisions.append(decision)
    return decisions
