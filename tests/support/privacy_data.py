"""A customer's whole story, stored the way production stores it, for privacy tests.

Events are built from Stripe's own example objects (current API shapes) with one
person's details in every place Stripe puts them, landed in ``stripe_events`` as the
receiver does and applied by the real processing run; tickets, recovery attempts,
fraud hits, discrepancies and deliveries that quote the person are added beside them.
Each person's strings are distinctive, so a scan of the whole database can tell
whether any survived.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, inspect, select, text

from stripe_pipeline.db.models import metadata
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import Delivery, insert_event, record_deliveries
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.support.tickets import TicketRequest, open_ticket
from tests.support.events import make_event

T = metadata.tables
FAST = RetryPolicy(base_seconds=0.01, factor=1, cap_seconds=0.01, max_retries=2, jitter="none")


@dataclass(frozen=True)
class Person:
    tag: str  # suffix of every Stripe id of this person
    name: str
    email: str
    old_email: str
    phone: str
    line1: str
    city: str

    @property
    def customer_id(self) -> str:
        return f"cus_Priv{self.tag}"

    @property
    def address(self) -> dict[str, Any]:
        return {
            "city": self.city,
            "country": "GB",
            "line1": self.line1,
            "line2": "Flat 3",
            "postal_code": "EC1A 1BB",
            "state": None,
        }

    def secrets(self) -> list[str]:
        """What must not survive an erasure anywhere in the database."""
        return [self.name, self.email, self.old_email, self.phone, self.line1]

    def ids(self) -> dict[str, str]:
        t = self.tag
        return {
            "customer": self.customer_id,
            "payment_method": f"pm_Priv{t}",
            "payment_intent": f"pi_Priv{t}",
            "charge": f"ch_Priv{t}",
            "subscription": f"sub_Priv{t}",
            "invoice": f"in_Priv{t}",
            "refund": f"re_Priv{t}",
            "dispute": f"dp_Priv{t}",
            "checkout": f"cs_test_Priv{t}",
        }


ADA = Person(
    "Ada1",
    "Ada Quartermaine",
    "ada.q@example.test",
    "ada.old@example.test",
    "+44 20 7946 0958",
    "12 Lantern Yard",
    "Winchelsea",
)
BOB = Person(
    "Bob2",
    "Bob Tiverton",
    "bob.t@example.test",
    "bob.old@example.test",
    "+44 20 7946 0111",
    "7 Orchard Row",
    "Hexham",
)


def _details(p: Person) -> dict[str, Any]:
    return {"address": p.address, "email": p.email, "name": p.name, "phone": p.phone}


def story(fixtures: dict[str, Any], p: Person, t0: int) -> list[dict[str, Any]]:
    """Every event type that carries personal data, about one customer."""
    ids = ids_ = p.ids()
    shipping = {"address": p.address, "name": p.name, "phone": p.phone}
    card = {"brand": "visa", "last4": "4444", "exp_month": 12, "exp_year": 2031}
    customer = {
        **copy.deepcopy(fixtures["customer"]),
        "id": ids["customer"],
        "email": p.email,
        "name": p.name,
        "phone": p.phone,
        "address": p.address,
        "shipping": shipping,
        "description": f"VIP {p.name}",
        "metadata": {"note": f"call {p.phone} first"},
        "created": t0,
    }
    pm = {
        **copy.deepcopy(fixtures["payment_method"]),
        "id": ids["payment_method"],
        "customer": ids["customer"],
        "billing_details": _details(p),
        "card": {
            **copy.deepcopy(fixtures["payment_method"]["card"]),
            **card,
            "fingerprint": f"fp{p.tag}",
        },
        "created": t0 + 2,
    }
    pi = {
        **copy.deepcopy(fixtures["payment_intent"]),
        "id": ids["payment_intent"],
        "customer": ids["customer"],
        "amount": 5000,
        "amount_received": 5000,
        "currency": "usd",
        "status": "succeeded",
        "receipt_email": p.email,
        "shipping": shipping,
        "description": f"Order for {p.name}",
        "latest_charge": ids["charge"],
        "payment_method": ids["payment_method"],
        "created": t0 + 3,
    }
    charge = {
        **copy.deepcopy(fixtures["charge"]),
        "id": ids["charge"],
        "payment_intent": ids["payment_intent"],
        "customer": ids["customer"],
        "amount": 5000,
        "amount_captured": 5000,
        "captured": True,
        "paid": True,
        "status": "succeeded",
        "currency": "usd",
        "billing_details": _details(p),
        "receipt_email": p.email,
        "shipping": shipping,
        "description": f"Order for {p.name}",
        "payment_method": ids["payment_method"],
        "payment_method_details": {
            "type": "card",
            "card": {**card, "fingerprint": f"fp{p.tag}"},
        },
        "created": t0 + 3,
    }
    subscription = {
        **copy.deepcopy(fixtures["subscription"]),
        "id": ids["subscription"],
        "customer": ids["customer"],
        "description": f"Plan of {p.name}",
        "created": t0 + 4,
    }
    invoice = {
        **copy.deepcopy(fixtures["invoice"]),
        "id": ids["invoice"],
        "customer": ids["customer"],
        "customer_email": p.email,
        "customer_name": p.name,
        "customer_phone": p.phone,
        "customer_address": p.address,
        "customer_shipping": shipping,
        "status": "paid",
        "amount_due": 5000,
        "amount_paid": 5000,
        "amount_remaining": 0,
        "currency": "usd",
        "created": t0 + 5,
    }
    refund = {
        **copy.deepcopy(fixtures["refund"]),
        "id": ids["refund"],
        "charge": ids["charge"],
        "payment_intent": ids["payment_intent"],
        "amount": 1000,
        "currency": "usd",
        "status": "succeeded",
        "description": f"goodwill for {p.name}",
        "created": t0 + 6,
    }
    evidence = {
        **copy.deepcopy(fixtures["dispute"]["evidence"]),
        "customer_name": p.name,
        "customer_email_address": p.email,
        "billing_address": f"{p.line1}, {p.city}",
        "shipping_address": f"{p.line1}, {p.city}",
        "customer_purchase_ip": "203.0.113.7",
        "uncategorized_text": f"{p.name} confirmed the order by phone ({p.phone})",
        "shipping_carrier": "Royal Mail",
    }
    dispute = {
        **copy.deepcopy(fixtures["dispute"]),
        "id": ids["dispute"],
        "charge": ids["charge"],
        "payment_intent": ids["payment_intent"],
        "amount": 2000,
        "currency": "usd",
        "status": "needs_response",
        "evidence": evidence,
        "created": t0 + 7,
    }
    session = {
        "id": ids_["checkout"],
        "object": "checkout.session",
        "customer": ids["customer"],
        "customer_details": _details(p),
        "customer_email": p.email,
        "amount_total": 5000,
        "currency": "usd",
        "status": "complete",
    }
    return [
        make_event("customer.created", {**customer, "email": p.old_email}, t0),
        make_event(
            "customer.updated", customer, t0 + 1, previous_attributes={"email": p.old_email}
        ),
        make_event("payment_method.attached", pm, t0 + 2),
        make_event("payment_intent.succeeded", pi, t0 + 3),
        make_event("charge.succeeded", charge, t0 + 3),
        make_event("customer.subscription.created", subscription, t0 + 4),
        make_event("invoice.paid", invoice, t0 + 5),
        make_event("refund.created", refund, t0 + 6),
        make_event("charge.dispute.created", dispute, t0 + 7),
        make_event("checkout.session.completed", session, t0 + 8),
    ]


def land(engine: Engine, events: list[dict[str, Any]]) -> None:
    """Store events as the receiver does, with a delivery row each."""
    with engine.begin() as conn:
        for event in events:
            insert_event(conn, envelope_from_event(event, json.dumps(event)))
        record_deliveries(
            conn,
            [
                Delivery(
                    endpoint="default",
                    remote_addr="127.0.0.1",
                    outcome="stored",
                    status_code=200,
                    stripe_event_id=e["id"],
                    event_type=e["type"],
                    body_bytes=len(json.dumps(e)),
                )
                for e in events
            ],
        )


def process(engine: Engine) -> None:
    report = process_pending(engine, policy=FAST)
    assert report.dead_lettered == 0, report


def operational_rows(engine: Engine, p: Person) -> None:
    """Rows of the pipeline's own tables that quote the person."""
    ids = p.ids()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        open_ticket(
            conn,
            TicketRequest(
                issue_type="payment_recovery_blocked",
                dedupe_key=f"recovery:{ids['payment_intent']}",
                title=f"Recovery blocked for {ids['payment_intent']}",
                payment_intent_id=ids["payment_intent"],
                details={"error": f"card holder {p.name} <{p.email}> asked us to stop"},
            ),
        )
        open_ticket(  # names none of their ids: found by what it quotes
            conn,
            TicketRequest(
                issue_type="check:manual",
                dedupe_key=f"manual:{p.tag}",
                # titles are built from ids (the audit log copies them); details are not
                title=f"Customer complaint {p.tag}",
                details={"from": p.email, "phone": p.phone},
            ),
        )
        conn.execute(
            insert(T["payment_recovery_attempts"]).values(
                payment_intent_id=ids["payment_intent"],
                customer_id=ids["customer"],
                status="recovered",
                recovery_key=f"pi:{ids['payment_intent']}",
                amount_minor=5000,
                currency="usd",
                failure_code="card_declined",
            )
        )
        conn.execute(
            insert(T["fraud_rule_hits"]).values(
                rule="email_mismatch",
                customer_id=ids["customer"],
                dedupe_key=f"fraud:{p.tag}",
                details={"billing_email": p.email, "shipping_name": p.name},
            )
        )
        run_id = conn.execute(
            insert(T["reconciliation_runs"])
            .values(status="succeeded")
            .returning(T["reconciliation_runs"].c.id)
        ).scalar_one()
        conn.execute(
            insert(T["reconciliation_discrepancies"]).values(
                run_id=run_id,
                first_seen_run_id=run_id,
                object_type="customer",
                object_id=ids["customer"],
                kind="field_mismatch",
                field="email",
                local_value=p.old_email,
                remote_value=p.email,
                updated_at=now,
            )
        )


def seed(engine: Engine, fixtures: dict[str, Any], people: list[Person]) -> int:
    """Land, process and decorate every person's story; returns its first event time."""
    t0 = int((datetime.now(UTC) - timedelta(days=10)).timestamp())
    for n, person in enumerate(people):
        land(engine, story(fixtures, person, t0 + n * 100))
    process(engine)
    for person in people:
        operational_rows(engine, person)
    return t0


def table_names(engine: Engine) -> list[str]:
    """Every table and view in the database (the schema's, the marts', any other)."""
    inspector = inspect(engine)
    return sorted(inspector.get_table_names() + inspector.get_view_names())


def dump(engine: Engine) -> list[tuple[str, str, str]]:
    """Every text and JSON value of every table and view: (table, column, text)."""
    found = []
    with engine.connect() as conn:
        for name in table_names(engine):
            rows = conn.execute(text(f'SELECT * FROM "{name}"')).mappings()
            for row in rows:
                for column, value in row.items():
                    if value is None or isinstance(value, bool | int | float):
                        continue
                    shown = value if isinstance(value, str) else json.dumps(value, default=str)
                    found.append((name, column, shown))
    return found


def leaks(engine: Engine, secrets: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, secret) for every secret still stored anywhere."""
    out = []
    for table, column, value in dump(engine):
        lowered = value.lower()
        out += [(table, column, s) for s in secrets if s.lower() in lowered]
    return out


def row(engine: Engine, table: str, column: str, value: str) -> dict[str, Any]:
    t = T[table]
    with engine.connect() as conn:
        found = conn.execute(select(t).where(t.c[column] == value)).mappings().one()
    return dict(found)
