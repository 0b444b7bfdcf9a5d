"""What the demo prints while it runs: how far events got through the pipeline.

Read straight from the app database (the source of truth), so the line is the same
whether processing happened in a sensor-launched run or by hand.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from stripe_pipeline.db.engine import make_engine

DOMAIN_TABLES = {
    "payments": "stripe_payments",
    "refunds": "stripe_refunds",
    "disputes": "stripe_disputes",
    "subscriptions": "stripe_subscriptions",
    "invoices": "stripe_invoices",
    "customers": "stripe_customers",
}


class PipelineProgress:
    """Counts of events by status, domain rows and support tickets."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        self.last: dict[str, Any] = {}

    def counts(self) -> dict[str, Any]:
        result: dict[str, Any] = {"events": {}, "rows": {}, "tickets": {}}
        try:
            with self.engine.connect() as conn:
                for status, n in conn.execute(
                    text("SELECT status, COUNT(*) FROM stripe_events GROUP BY status")
                ):
                    result["events"][status] = n
                for label, table in DOMAIN_TABLES.items():
                    result["rows"][label] = conn.execute(
                        text(f"SELECT COUNT(*) FROM {table}")
                    ).scalar_one()
                for status, n in conn.execute(
                    text("SELECT status, COUNT(*) FROM payment_support_tickets GROUP BY status")
                ):
                    result["tickets"][status] = n
        except SQLAlchemyError as exc:
            result["error"] = type(exc).__name__
        self.last = result
        return result

    def summary_line(self) -> str:
        counts = self.counts()
        if "error" in counts:
            return f"pipeline: database not readable yet ({counts['error']})"
        events = counts["events"]
        total = sum(events.values())
        by_status = ", ".join(f"{n} {s}" for s, n in sorted(events.items())) or "none yet"
        rows = ", ".join(f"{n} {label}" for label, n in counts["rows"].items())
        tickets = sum(counts["tickets"].values())
        open_tickets = counts["tickets"].get("open", 0)
        return (
            f"pipeline: {total} events ({by_status}) | rows: {rows} | "
            f"support tickets: {tickets} ({open_tickets} open)"
        )

    def settled(self) -> bool:
        """True when events arrived and none is waiting for a first processing run."""
        events = self.last.get("events") or {}
        return bool(events) and not events.get("pending") and not events.get("processing")

    def close(self) -> None:
        self.engine.dispose()
