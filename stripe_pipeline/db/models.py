"""The app database, as typed SQLAlchemy tables.

Table and column names follow the architecture plan (``stripe_events``,
``payment_recovery_attempts``, ``stripe_refunds``, ``stripe_disputes``,
``payment_support_tickets``). Alembic migrations create exactly this schema; a test
compares the two so they never drift.

Domain tables share one ordering guard: ``last_event_created`` and ``last_event_id``
record the newest Stripe event applied to a row, so an older or repeated event
changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from stripe_pipeline.db.statuses import EventStatus, TicketStatus
from stripe_pipeline.db.types import BigIntPK, JSONDoc, derived_amount

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Event queue states. ``processing`` rows carry a lease; ``retry`` rows wait for
# ``next_retry_at``; ``dead_letter`` rows were escalated to a support ticket.
EVENT_STATUSES = tuple(EventStatus)
# statuses still in the queue; the literal predicate of ix_stripe_events_claim_order
QUEUED_EVENTS = "status IN ('pending', 'retry', 'processing')"
# rows ix_stripe_events_queue holds: the queue and its dead letters, never the
# (ever growing) processed and ignored events
QUEUE_INDEX_STATUSES = "status IN ('pending', 'retry', 'processing', 'dead_letter')"
LINKED_TO_TICKET = "support_ticket_id IS NOT NULL"
TICKET_STATUSES = tuple(TicketStatus)
TICKET_PRIORITIES = ("low", "medium", "high", "critical")


def _now():
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EventVersionMixin:
    """Newest-event-wins guard shared by every table built from Stripe events."""

    stripe_created: Mapped[int | None] = mapped_column(BigInteger)
    livemode: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    last_event_id: Mapped[str | None] = mapped_column(String(255))
    last_event_created: Mapped[int | None] = mapped_column(BigInteger)
    # lifecycle stage of that event: breaks ties between events of the same second
    last_event_rank: Mapped[int | None] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class StripeEvent(Base):
    """Raw Stripe events: the durable queue and the source of truth for processing."""

    __tablename__ = "stripe_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_event_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    event_type: Mapped[str] = mapped_column(String(255), nullable=False)
    api_version: Mapped[str | None] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    account: Mapped[str | None] = mapped_column(String(255))
    object_id: Mapped[str | None] = mapped_column(String(255))
    stripe_created: Mapped[int] = mapped_column(BigInteger, nullable=False)
    received_at: Mapped[datetime] = _now()
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False, server_default="pending")
    source: Mapped[str] = mapped_column(String(32), nullable=False, server_default="webhook")
    endpoint: Mapped[str | None] = mapped_column(String(64))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # plan enhancements
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_context: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    # claim lease of the processing run that holds the event
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the support ticket a dead letter was escalated to (tickets group events by cause)
    support_ticket_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(
            "ix_stripe_events_queue",
            "status",
            "next_retry_at",
            # PostgreSQL only: SQLite would not use it for ``status = 'pending'``
            postgresql_where=text(QUEUE_INDEX_STATUSES),
        ),
        # claim order of queued events; partial, so it stays small (0006_event_claim_order)
        Index(
            "ix_stripe_events_claim_order",
            "stripe_created",
            "id",
            postgresql_where=text(QUEUED_EVENTS),
            sqlite_where=text(QUEUED_EVENTS),
        ),
        Index("ix_stripe_events_object", "object_id", "stripe_created"),
        Index("ix_stripe_events_type_created", "event_type", "stripe_created"),
        # only linked events (0010_hostile_input): a ticket's events, for AutoRetry
        Index(
            "ix_stripe_events_support_ticket_id",
            "support_ticket_id",
            postgresql_where=text(LINKED_TO_TICKET),
            sqlite_where=text(LINKED_TO_TICKET),
        ),
    )


class ProcessingClaim(Base):
    """One in-flight PostgreSQL processing batch: its events and the session locking them.

    Deleted in the batch's own transaction; a row whose session is gone is a batch that
    died, and each of its events is charged one attempt (``queue.sweep_dead_claims``).
    """

    __tablename__ = "processing_claims"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(String(255), nullable=False)
    backend_pid: Mapped[int] = mapped_column(Integer, nullable=False)
    backend_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    event_ids: Mapped[list[int]] = mapped_column(JSONDoc, nullable=False)
    claimed_at: Mapped[datetime] = _now()


class WebhookDelivery(Base):
    """Every request the receiver answered, valid or not (bodies of invalid ones never kept)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = _now()
    endpoint: Mapped[str | None] = mapped_column(String(64))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(255))
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    event_type: Mapped[str | None] = mapped_column(String(255))
    body_bytes: Mapped[int | None] = mapped_column(Integer)
    repeat_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))

    __table_args__ = (Index("ix_webhook_deliveries_received_at", "received_at"),)


# Predicates of partial unique indexes, as SQL text: an ``ON CONFLICT ... WHERE`` that
# infers such an index must repeat the predicate as text, never as a bound parameter
# (a generic plan of a prepared statement cannot infer the index from a parameter).
UNRESOLVED_TICKET = "status <> 'resolved'"
LIVE_RECOVERY = "status NOT IN ('recovered', 'canceled')"


class PaymentSupportTicket(Base):
    """Escalations a person must look at; one open ticket per issue and object."""

    __tablename__ = "payment_support_tickets"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    issue_type: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False, server_default="open")
    priority: Mapped[str] = mapped_column(String(16), nullable=False)
    dedupe_key: Mapped[str] = mapped_column(String(512), nullable=False)
    title: Mapped[str] = mapped_column(String(512), nullable=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    resolution: Mapped[str | None] = mapped_column(String(32))
    resolution_note: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # at most one unresolved ticket per issue and object
        Index(
            "uq_payment_support_tickets_open_dedupe",
            "dedupe_key",
            unique=True,
            postgresql_where=text(UNRESOLVED_TICKET),
            sqlite_where=text(UNRESOLVED_TICKET),
        ),
        Index("ix_payment_support_tickets_status_priority", "status", "priority"),
    )


class PaymentRecoveryAttempt(Base):
    """Dunning state of one failed payment (invoice or PaymentIntent)."""

    __tablename__ = "payment_recovery_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), nullable=False, server_default="open")
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    failure_code: Mapped[str | None] = mapped_column(String(255))
    decline_code: Mapped[str | None] = mapped_column(String(255))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    amount = derived_amount("amount_minor")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # plan enhancements
    recovery_strategy: Mapped[str | None] = mapped_column(String(64))
    last_error_type: Mapped[str | None] = mapped_column(String(64))
    support_ticket_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("payment_support_tickets.id", name="fk_recovery_attempts_support_ticket"),
    )

    __table_args__ = (
        Index("ix_payment_recovery_attempts_due", "status", "next_attempt_at"),
        Index("ix_payment_recovery_attempts_payment_intent_id", "payment_intent_id"),
        Index("ix_payment_recovery_attempts_invoice_id", "invoice_id"),
    )


class StripePayment(EventVersionMixin, Base):
    """Payment records: one row per PaymentIntent (or per legacy charge without one).

    ``payment_intent_id`` holds the PaymentIntent id, or the charge id for a charge
    created without a PaymentIntent, so refunds and disputes always find their payment.
    """

    __tablename__ = "stripe_payments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    charge_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    card_fingerprint: Mapped[str | None] = mapped_column(String(255))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_received_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_refunded_minor: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    currency: Mapped[str | None] = mapped_column(String(3))
    amount = derived_amount("amount_minor")
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    failure_code: Mapped[str | None] = mapped_column(String(255))
    failure_message: Mapped[str | None] = mapped_column(Text)
    decline_code: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    # the latest charge's balance transaction (its fee and net): 0016_money
    balance_transaction_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_stripe_payments_customer_id", "customer_id"),
        Index("ix_stripe_payments_charge_id", "charge_id"),
    )


class StripeRefund(EventVersionMixin, Base):
    __tablename__ = "stripe_refunds"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_refund_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), nullable=False)
    charge_id: Mapped[str | None] = mapped_column(String(255))
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount = derived_amount("amount_minor")
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(255))
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    # the refund's balance transaction: 0016_money
    balance_transaction_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_stripe_refunds_payment_intent_id", "payment_intent_id"),)


class StripeDispute(EventVersionMixin, Base):
    __tablename__ = "stripe_disputes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_dispute_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), nullable=False)
    charge_id: Mapped[str | None] = mapped_column(String(255))
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount = derived_amount("amount_minor")
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(255))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    due_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    has_evidence: Mapped[bool | None] = mapped_column(Boolean)
    is_charge_refundable: Mapped[bool | None] = mapped_column(Boolean)
    funds_withdrawn_minor: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    funds_reinstated_minor: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_stripe_disputes_payment_intent_id", "payment_intent_id"),
        Index("ix_stripe_disputes_status_due_by", "status", "due_by"),
    )


class StripeCustomer(EventVersionMixin, Base):
    __tablename__ = "stripe_customers"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    email: Mapped[str | None] = mapped_column(String(512))
    name: Mapped[str | None] = mapped_column(String(512))
    default_payment_method_id: Mapped[str | None] = mapped_column(String(255))
    delinquent: Mapped[bool | None] = mapped_column(Boolean)
    currency: Mapped[str | None] = mapped_column(String(3))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fraud_flagged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fraud_reason: Mapped[str | None] = mapped_column(String(255))


class StripeSubscription(EventVersionMixin, Base):
    __tablename__ = "stripe_subscriptions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_subscription_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    price_id: Mapped[str | None] = mapped_column(String(255))
    product_id: Mapped[str | None] = mapped_column(String(255))
    quantity: Mapped[int | None] = mapped_column(Integer)
    unit_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    billing_interval: Mapped[str | None] = mapped_column(String(16))
    billing_interval_count: Mapped[int | None] = mapped_column(Integer)
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    trial_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trial_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    current_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_at_period_end: Mapped[bool | None] = mapped_column(Boolean)
    cancel_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trial_will_end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_stripe_subscriptions_customer_id", "customer_id"),
        Index("ix_stripe_subscriptions_status", "status"),
    )


class StripeInvoice(EventVersionMixin, Base):
    __tablename__ = "stripe_invoices"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    charge_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    billing_reason: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(3))
    amount_due_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_paid_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_remaining_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount = derived_amount("amount_due_minor")
    attempt_count: Mapped[int | None] = mapped_column(Integer)
    next_payment_attempt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    due_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    marked_uncollectible_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_stripe_invoices_customer_id", "customer_id"),
        Index("ix_stripe_invoices_subscription_id", "subscription_id"),
    )


class StripeInvoicePayment(EventVersionMixin, Base):
    """One payment attached to an invoice (an InvoicePayment, API 2025-03-31.basil on).

    Since basil neither the invoice nor the PaymentIntent names the other: this row is
    the link, and it fills ``stripe_invoices.payment_intent_id`` / ``charge_id`` and
    ``stripe_payments.invoice_id`` (catalog ``Link``). ``amount`` is derived from the
    amount requested (``amount_paid`` stays NULL until the payment is paid).
    """

    __tablename__ = "stripe_invoice_payments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_invoice_payment_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    invoice_id: Mapped[str] = mapped_column(String(255), nullable=False)
    payment_type: Mapped[str | None] = mapped_column(String(32))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    charge_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))
    is_default: Mapped[bool | None] = mapped_column(Boolean)
    amount_requested_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_paid_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    amount = derived_amount("amount_requested_minor")
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_stripe_invoice_payments_invoice_id", "invoice_id"),
        Index("ix_stripe_invoice_payments_payment_intent_id", "payment_intent_id"),
        Index("ix_stripe_invoice_payments_charge_id", "charge_id"),
    )


class StripePaymentMethod(EventVersionMixin, Base):
    __tablename__ = "stripe_payment_methods"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_payment_method_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(64))
    card_brand: Mapped[str | None] = mapped_column(String(32))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    card_exp_month: Mapped[int | None] = mapped_column(Integer)
    card_exp_year: Mapped[int | None] = mapped_column(Integer)
    card_fingerprint: Mapped[str | None] = mapped_column(String(255))
    attached: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    detached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_stripe_payment_methods_customer_id", "customer_id"),
        Index("ix_stripe_payment_methods_card_fingerprint", "card_fingerprint"),
    )


class StripeProduct(EventVersionMixin, Base):
    __tablename__ = "stripe_products"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_product_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool | None] = mapped_column(Boolean)
    type: Mapped[str | None] = mapped_column(String(32))
    default_price_id: Mapped[str | None] = mapped_column(String(255))
    unit_label: Mapped[str | None] = mapped_column(String(255))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StripePrice(EventVersionMixin, Base):
    """Prices and legacy plans: Stripe's prices API returns a plan as a price with the
    same id, so both land here (one row per id)."""

    __tablename__ = "stripe_prices"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_price_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    product_id: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool | None] = mapped_column(Boolean)
    currency: Mapped[str | None] = mapped_column(String(3))
    unit_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount = derived_amount("unit_amount_minor")
    unit_amount_decimal: Mapped[str | None] = mapped_column(String(64))
    billing_scheme: Mapped[str | None] = mapped_column(String(32))
    type: Mapped[str | None] = mapped_column(String(32))
    recurring_interval: Mapped[str | None] = mapped_column(String(16))
    recurring_interval_count: Mapped[int | None] = mapped_column(Integer)
    recurring_usage_type: Mapped[str | None] = mapped_column(String(32))
    nickname: Mapped[str | None] = mapped_column(Text)
    lookup_key: Mapped[str | None] = mapped_column(String(255))
    tax_behavior: Mapped[str | None] = mapped_column(String(32))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_stripe_prices_product_id", "product_id"),)


class StripeCoupon(EventVersionMixin, Base):
    __tablename__ = "stripe_coupons"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_coupon_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    percent_off: Mapped[float | None] = mapped_column(Double)
    amount_off_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    duration: Mapped[str | None] = mapped_column(String(16))
    duration_in_months: Mapped[int | None] = mapped_column(Integer)
    max_redemptions: Mapped[int | None] = mapped_column(BigInteger)
    times_redeemed: Mapped[int | None] = mapped_column(BigInteger)
    valid: Mapped[bool | None] = mapped_column(Boolean)
    redeem_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StripePromotionCode(EventVersionMixin, Base):
    __tablename__ = "stripe_promotion_codes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_promotion_code_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    code: Mapped[str | None] = mapped_column(String(255))
    coupon_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool | None] = mapped_column(Boolean)
    max_redemptions: Mapped[int | None] = mapped_column(BigInteger)
    times_redeemed: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_stripe_promotion_codes_coupon_id", "coupon_id"),)


class StripeDiscount(EventVersionMixin, Base):
    """Discounts on customers, subscriptions, invoices and invoice items, keyed by
    ``di_...`` (id-less discounts of old API versions by a derived ``di_legacy_`` key)."""

    __tablename__ = "stripe_discounts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_discount_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    coupon_id: Mapped[str | None] = mapped_column(String(255))
    promotion_code_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_item_id: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    invoice_item_id: Mapped[str | None] = mapped_column(String(255))
    start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_stripe_discounts_coupon_id", "coupon_id"),
        Index("ix_stripe_discounts_subscription_id", "subscription_id"),
        Index("ix_stripe_discounts_customer_id", "customer_id"),
    )


class AuditLog(Base):
    """Append-only trail of payment operations and state changes.

    Database triggers refuse UPDATE and DELETE, so no code path can rewrite history.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = _now()
    # "event:<id>" for an event id of up to 255 characters (0010_hostile_input)
    actor: Mapped[str] = mapped_column(String(512), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    object_type: Mapped[str] = mapped_column(String(64), nullable=False)
    object_id: Mapped[str | None] = mapped_column(String(255))
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)

    __table_args__ = (
        Index("ix_audit_log_object", "object_type", "object_id"),
        Index("ix_audit_log_occurred_at", "occurred_at"),
    )


metadata = Base.metadata


# --- payment recovery (dunning), payment-attempt limits, fraud rules (0004_recovery) ---

# Recovery states: ``open`` waits for a scheduled retry; ``awaiting_customer`` waits for
# the customer to fix their card; ``blocked`` must never be retried; ``exhausted`` ran
# out of retries; ``recovered`` and ``canceled`` are closed.
RECOVERY_STATUSES = ("open", "awaiting_customer", "blocked", "exhausted", "recovered", "canceled")
PaymentRecoveryAttempt.recovery_key = mapped_column(String(255))  # type: ignore[attr-defined]
PaymentRecoveryAttempt.closed_at = mapped_column(DateTime(timezone=True))  # type: ignore[attr-defined]
PaymentRecoveryAttempt.__table__.append_constraint(  # one live recovery per payment/invoice
    Index(
        "uq_payment_recovery_attempts_live_key",
        PaymentRecoveryAttempt.__table__.c.recovery_key,
        unique=True,
        postgresql_where=text(LIVE_RECOVERY),
        sqlite_where=text(LIVE_RECOVERY),
    )
)


class PaymentAttempt(Base):
    """Ledger of payment attempts per card and customer: the shared, database-enforced
    rate limit. Refused attempts stay in the ledger with their reason."""

    __tablename__ = "payment_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    card_key: Mapped[str] = mapped_column(String(255), nullable=False)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    recovery_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("payment_recovery_attempts.id", name="fk_payment_attempts_recovery"),
    )
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    decision: Mapped[str] = mapped_column(String(16), nullable=False)  # allowed | refused
    reason: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[str | None] = mapped_column(String(32))  # succeeded | failed | error
    attempted_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_payment_attempts_card_window", "card_key", "decision", "attempted_at"),
        Index("ix_payment_attempts_customer_window", "customer_id", "decision", "attempted_at"),
        Index("ix_payment_attempts_recovery_id", "recovery_id"),
    )


class FraudRuleHit(Base):
    """One fraud rule firing for one customer and window; the key keeps rescans idempotent."""

    __tablename__ = "fraud_rule_hits"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64), nullable=False)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    dedupe_key: Mapped[str] = mapped_column(String(512), nullable=False, unique=True)
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    observed: Mapped[int | None] = mapped_column(Integer)
    threshold: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    support_ticket_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("payment_support_tickets.id", name="fk_fraud_rule_hits_support_ticket"),
    )
    detected_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_fraud_rule_hits_customer_id", "customer_id"),)


# Reconciliation against the Stripe API (issue 5). A discrepancy is "unresolved" while
# open or ticketed; only one unresolved row may exist per object, kind and field, so
# a nightly run updates the row it found before instead of adding a duplicate.
RECONCILIATION_RUN_STATUSES = ("running", "succeeded", "failed")
DISCREPANCY_KINDS = ("missing_locally", "missing_in_stripe", "deleted_in_stripe", "field_mismatch")
DISCREPANCY_STATUSES = ("open", "repaired", "ticketed", "resolved")
UNRESOLVED_DISCREPANCY = "status IN ('open', 'ticketed')"


class ReconciliationRun(Base):
    """One reconciliation run: its window, outcome, counts and, when it failed, why."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="running")
    full_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    triggered_by: Mapped[str | None] = mapped_column(String(255))
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_reconciliation_runs_status_started_at", "status", "started_at"),)


class ReconciliationDiscrepancy(Base):
    """A difference between a local table and the Stripe API, and what became of it.

    ``field`` is '' for missing objects (not NULL: NULLs never collide in a unique
    index, which would let duplicates of one discrepancy pile up).
    """

    __tablename__ = "reconciliation_discrepancies"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("reconciliation_runs.id", name="fk_reconciliation_discrepancies_run"),
        nullable=False,
    )
    object_type: Mapped[str] = mapped_column(String(64), nullable=False)
    object_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    field: Mapped[str] = mapped_column(String(64), nullable=False, server_default="")
    local_value: Mapped[Any | None] = mapped_column(JSONDoc)
    remote_value: Mapped[Any | None] = mapped_column(JSONDoc)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="open")
    ticket_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("payment_support_tickets.id", name="fk_reconciliation_discrepancies_ticket"),
    )
    first_seen_run_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    resolved_run_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "uq_reconciliation_discrepancies_unresolved",
            "object_type",
            "object_id",
            "kind",
            "field",
            unique=True,
            postgresql_where=text(UNRESOLVED_DISCREPANCY),
            sqlite_where=text(UNRESOLVED_DISCREPANCY),
        ),
        Index("ix_reconciliation_discrepancies_run_id", "run_id"),
        Index("ix_reconciliation_discrepancies_status", "status"),
    )


class StaleObject(Base):
    """An object whose stored state is a guess until it is fetched from the Stripe API.

    Two events of one object in the same second that the lifecycle cannot order, and
    that say different things, leave the row as the event-id tie-break had it; the
    object is queued here, fetched by id (batched, rate-limited, audited) and its state
    repaired, at the latest by the nightly reconciliation.
    """

    __tablename__ = "stale_objects"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    object_type: Mapped[str] = mapped_column(String(64), nullable=False)
    object_id: Mapped[str] = mapped_column(String(255), nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False)
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    queued_at: Mapped[datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("uq_stale_objects_object", "object_type", "object_id", unique=True),)


class ReconciliationWatermark(Base):
    """Per listed resource, the end of the last fully reconciled window."""

    __tablename__ = "reconciliation_watermarks"

    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_run_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = _now()


# Personal data and retention (issue 18, 0012_privacy).
ERASURE_STATUSES = ("erasing", "erased")
RETENTION_RUN_STATUSES = ("running", "succeeded", "failed")


class Erasure(Base):
    """A customer whose personal data was erased, and what the last erasure did.

    A row exists from the first moment of an erasure (``erasing``), so processing,
    reconciliation and backfill already keep that customer's personal fields blank
    while the erasure runs; every run is also an audit row (``customer_erased``).
    """

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="erasing")
    reason: Mapped[str] = mapped_column(String(32), nullable=False)  # request | customer_deleted
    requested_by: Mapped[str] = mapped_column(String(255), nullable=False)
    requested_at: Mapped[datetime] = _now()
    erased_by: Mapped[str | None] = mapped_column(String(255))
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    runs: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # stripe_events.id up to which this customer's events have been blanked
    events_swept_to_id: Mapped[int | None] = mapped_column(BigInteger)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)


class RetentionRun(Base):
    """One retention run: its ages, what it pruned (or would have, dry), and its watermark."""

    __tablename__ = "retention_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="running")
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    triggered_by: Mapped[str | None] = mapped_column(String(255))
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    # stripe_events.id below which every eligible payload was dropped (next run's start)
    events_scanned_to_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_retention_runs_status_started_at", "status", "started_at"),)


class StripeRateLimit(Base):
    """One bucket of the Stripe rate limit every process shares: the account, or one
    endpoint of it (``stripe_api/ratelimit.py``).

    Times are seconds since the epoch on the database's clock (PostgreSQL) or the
    host's (SQLite, one host). ``tat`` is the GCRA theoretical arrival time: the
    earliest moment the next request may go; ``cooldown_until`` is set by a 429;
    ``priority_until`` (account row) holds the bulk lane back while a payment waits.
    """

    __tablename__ = "stripe_rate_limits"

    bucket: Mapped[str] = mapped_column(String(255), primary_key=True)
    rate: Mapped[float] = mapped_column(Double, nullable=False)
    tat: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    cooldown_until: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    priority_until: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")


class StripeListingSlice(Base):
    """One time slice of a resumable listing run (``stripe_api/listing.py``).

    A run that dies is resumed by a run with the same ``run_key``: slices marked
    ``done`` are not listed again, the others continue after ``cursor`` (and end at
    the first of their ``stops``).
    """

    __tablename__ = "stripe_listing_slices"

    run_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    listing: Mapped[str] = mapped_column(String(1000), primary_key=True)
    slice_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    gte: Mapped[int | None] = mapped_column(BigInteger)
    lte: Mapped[int | None] = mapped_column(BigInteger)
    cursor: Mapped[str | None] = mapped_column(String(255))
    done: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    objects: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # the cuts a slice of a crowded second ends at, comma-separated (0017_listing_stops)
    stops: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _now()


# --- billing, tax, checkout and fraud objects (0015_billing) ---


class StripeInvoiceLineItem(EventVersionMixin, Base):
    """One line of an invoice: a subscription item's period or an invoice item.

    Keyed by the line's ``il_`` id; a line from before 2019-12-03 (its id was its
    source's, repeated on every invoice) by ``<invoice id>:<line id>``.
    """

    __tablename__ = "stripe_invoice_line_items"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_line_item_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    invoice_id: Mapped[str] = mapped_column(String(255), nullable=False)
    type: Mapped[str | None] = mapped_column(String(32))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_item_id: Mapped[str | None] = mapped_column(String(255))
    invoice_item_id: Mapped[str | None] = mapped_column(String(255))
    price_id: Mapped[str | None] = mapped_column(String(255))
    product_id: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str | None] = mapped_column(String(3))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    proration: Mapped[bool | None] = mapped_column(Boolean)
    discount_minor: Mapped[int | None] = mapped_column(BigInteger)
    tax_minor: Mapped[int | None] = mapped_column(BigInteger)
    taxes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_stripe_invoice_line_items_invoice_id", "invoice_id"),)


class StripeInvoiceTotals(EventVersionMixin, Base):
    """An invoice's totals as Stripe computed them, with its tax amounts per rate."""

    __tablename__ = "stripe_invoice_totals"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    currency: Mapped[str | None] = mapped_column(String(3))
    subtotal_minor: Mapped[int | None] = mapped_column(BigInteger)
    total_minor: Mapped[int | None] = mapped_column(BigInteger)
    discount_minor: Mapped[int | None] = mapped_column(BigInteger)
    tax_minor: Mapped[int | None] = mapped_column(BigInteger)
    taxes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StripeCreditNote(EventVersionMixin, Base):
    __tablename__ = "stripe_credit_notes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_credit_note_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    type: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(3))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    subtotal_minor: Mapped[int | None] = mapped_column(BigInteger)
    total_minor: Mapped[int | None] = mapped_column(BigInteger)
    discount_minor: Mapped[int | None] = mapped_column(BigInteger)
    tax_minor: Mapped[int | None] = mapped_column(BigInteger)
    taxes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    out_of_band_minor: Mapped[int | None] = mapped_column(BigInteger)
    refund_ids: Mapped[list[str] | None] = mapped_column(JSONDoc)
    voided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_stripe_credit_notes_invoice_id", "invoice_id"),)


class StripeCreditNoteLineItem(EventVersionMixin, Base):
    __tablename__ = "stripe_credit_note_line_items"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_credit_note_line_item_id: Mapped[str] = mapped_column(
        String(255), nullable=False, unique=True
    )
    credit_note_id: Mapped[str] = mapped_column(String(255), nullable=False)
    invoice_line_item_id: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(64))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    unit_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    discount_minor: Mapped[int | None] = mapped_column(BigInteger)
    tax_minor: Mapped[int | None] = mapped_column(BigInteger)
    taxes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)

    __table_args__ = (Index("ix_stripe_credit_note_line_items_credit_note_id", "credit_note_id"),)


class StripeTaxRate(EventVersionMixin, Base):
    __tablename__ = "stripe_tax_rates"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_tax_rate_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    # Stripe sends a decimal number (8.875): kept as the double it is in JSON
    percentage: Mapped[float | None] = mapped_column(Double)
    inclusive: Mapped[bool | None] = mapped_column(Boolean)
    active: Mapped[bool | None] = mapped_column(Boolean)
    country: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(64))
    jurisdiction: Mapped[str | None] = mapped_column(String(255))
    jurisdiction_level: Mapped[str | None] = mapped_column(String(32))
    tax_type: Mapped[str | None] = mapped_column(String(64))


class StripeCheckoutSession(EventVersionMixin, Base):
    __tablename__ = "stripe_checkout_sessions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_checkout_session_id: Mapped[str] = mapped_column(
        String(255), nullable=False, unique=True
    )
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    payment_status: Mapped[str | None] = mapped_column(String(32))
    mode: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(3))
    amount_subtotal_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_total_minor: Mapped[int | None] = mapped_column(BigInteger)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    customer_email: Mapped[str | None] = mapped_column(String(512))
    customer_name: Mapped[str | None] = mapped_column(String(512))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    setup_intent_id: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    payment_link_id: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StripeSetupIntent(EventVersionMixin, Base):
    __tablename__ = "stripe_setup_intents"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_setup_intent_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    usage: Mapped[str | None] = mapped_column(String(32))
    cancellation_reason: Mapped[str | None] = mapped_column(String(64))
    last_error_code: Mapped[str | None] = mapped_column(String(255))
    last_error_decline_code: Mapped[str | None] = mapped_column(String(255))


class StripeEarlyFraudWarning(EventVersionMixin, Base):
    __tablename__ = "stripe_early_fraud_warnings"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_early_fraud_warning_id: Mapped[str] = mapped_column(
        String(255), nullable=False, unique=True
    )
    charge_id: Mapped[str | None] = mapped_column(String(255))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    fraud_type: Mapped[str | None] = mapped_column(String(64))
    actionable: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (Index("ix_stripe_early_fraud_warnings_charge_id", "charge_id"),)


class StripeReview(EventVersionMixin, Base):
    __tablename__ = "stripe_reviews"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_review_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    charge_id: Mapped[str | None] = mapped_column(String(255))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    open: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(64))
    opened_reason: Mapped[str | None] = mapped_column(String(64))
    closed_reason: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_stripe_reviews_charge_id", "charge_id"),)


# --- money to the bank: balance transactions and payouts (0016_money) ---


class StripeBalanceTransaction(EventVersionMixin, Base):
    """One movement of the Stripe balance: a charge, refund, dispute, fee, adjustment or
    payout, with Stripe's fee and the net in the settlement currency.

    ``payout_id`` is known only from an automatic payout's transaction list (Stripe's
    balance transaction object does not name its payout) or, for the payout's own
    transaction, from its source.
    """

    __tablename__ = "stripe_balance_transactions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_balance_transaction_id: Mapped[str] = mapped_column(
        String(255), nullable=False, unique=True
    )
    type: Mapped[str | None] = mapped_column(String(64))
    reporting_category: Mapped[str | None] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fee_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    net_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount = derived_amount("amount_minor")
    # settlement currency per unit of the charge's (presentment) currency; exact decimal
    exchange_rate: Mapped[Decimal | None] = mapped_column(Numeric(24, 12))
    source_id: Mapped[str | None] = mapped_column(String(255))
    source_type: Mapped[str | None] = mapped_column(String(64))
    payout_id: Mapped[str | None] = mapped_column(String(255))
    available_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_stripe_balance_transactions_payout_id", "payout_id"),
        Index("ix_stripe_balance_transactions_source_id", "source_id"),
    )


class StripePayout(EventVersionMixin, Base):
    """Money sent from the Stripe balance to a bank account or card."""

    __tablename__ = "stripe_payouts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    stripe_payout_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount = derived_amount("amount_minor")
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    arrival_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    automatic: Mapped[bool | None] = mapped_column(Boolean)
    method: Mapped[str | None] = mapped_column(String(32))
    destination_id: Mapped[str | None] = mapped_column(String(255))
    destination_type: Mapped[str | None] = mapped_column(String(32))
    failure_code: Mapped[str | None] = mapped_column(String(255))
    failure_message: Mapped[str | None] = mapped_column(Text)
    reconciliation_status: Mapped[str | None] = mapped_column(String(32))
    balance_transaction_id: Mapped[str | None] = mapped_column(String(255))
    failure_balance_transaction_id: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_stripe_payouts_status_arrival_date", "status", "arrival_date"),)
