"""Local rows as processing would have left them, written straight into their table
(for reconciliation tests that start from a table Stripe disagrees with)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, text


def insert_refunds(engine: Engine, refunds: Sequence[tuple[str, int]]) -> None:
    """``stripe_refunds`` rows ``(id, created)``, the other columns at plain values."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stripe_refunds (stripe_refund_id, payment_intent_id, amount_minor,"
                " currency, status, stripe_created) VALUES (:id, 'pi_1', 100, 'usd',"
                " 'succeeded', :created)"
            ),
            [{"id": refund_id, "created": created} for refund_id, created in refunds],
        )


def insert_customers(engine: Engine, customers: Sequence[tuple[str, int, bool]]) -> None:
    """``stripe_customers`` rows ``(id, created, deleted)``."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stripe_customers (stripe_customer_id, stripe_created, deleted_at)"
                " VALUES (:id, :created, CASE WHEN :deleted THEN CURRENT_TIMESTAMP END)"
            ),
            [{"id": i, "created": c, "deleted": deleted} for i, c, deleted in customers],
        )
