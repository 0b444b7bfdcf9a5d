"""0012_privacy rewrites the existing audit rows once, keeping who did what, and leaves
the append-only triggers in place on both backends."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
CHAIN = ("id", "occurred_at", "actor", "action", "object_type", "object_id", "stripe_event_id")


def _audit(engine: Engine) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_log ORDER BY id")).mappings().all()
    out = {}
    for row in rows:
        row = dict(row)
        for column in ("before", "after", "details"):
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
        out[row["id"]] = row
    return out


def _insert(conn, **values: Any) -> None:
    for column in ("before", "after", "details"):
        values[column] = json.dumps(values[column]) if values.get(column) is not None else None
    conn.execute(
        text(
            "INSERT INTO audit_log (actor, action, object_type, object_id, stripe_event_id, "
            "before, after, details) VALUES (:actor, :action, :object_type, :object_id, "
            ":stripe_event_id, :before, :after, :details)"
        ),
        {"object_id": None, "stripe_event_id": None, **values},
    )


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_existing_audit_rows_lose_personal_values_but_keep_the_chain(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    try:
        migrate.upgrade(engine, "0008_batch_claims")
        with engine.begin() as conn:
            _insert(
                conn,
                actor="event:evt_1",
                action="upsert",
                object_type="customer",
                object_id="cus_1",
                stripe_event_id="evt_1",
                before=None,
                after={"email": "jane@example.com", "name": "Jane Roe", "delinquent": False},
                details=None,
            )
            _insert(
                conn,
                actor="event:evt_2",
                action="upsert",
                object_type="customer",
                object_id="cus_1",
                stripe_event_id="evt_2",
                before={"email": "jane@example.com", "name": "Jane Roe", "delinquent": False},
                after={"email": "jane.roe@example.com", "name": "Jane Roe", "delinquent": True},
                details={"events": ["evt_2", "evt_3"]},
            )
            _insert(
                conn,
                actor="event:evt_4",
                action="upsert",
                object_type="payment_method",
                object_id="pm_1",
                stripe_event_id="evt_4",
                before=None,
                after={"customer_id": "cus_1", "card_last4": "4242", "card_exp_year": 2030},
                details=None,
            )
            _insert(
                conn,
                actor="operator:ann",
                action="ticket_resolved",
                object_type="support_ticket",
                object_id="7",
                before={"status": "open"},
                after={"status": "resolved", "note": "done"},
                details=None,
            )
        before = _audit(engine)

        migrate.upgrade(engine)
        after = _audit(engine)

        assert after.keys() == before.keys()
        for row_id, row in after.items():
            assert {k: row[k] for k in CHAIN} == {k: before[row_id][k] for k in CHAIN}
        created, changed, card, ticket = (after[i] for i in sorted(after))
        assert created["before"] is None
        assert created["after"] == {
            "email": "[redacted]",
            "name": "[redacted]",
            "delinquent": False,
        }
        assert created["details"] == {"personal_fields_changed": ["email", "name"]}
        assert changed["before"]["email"] == changed["after"]["email"] == "[redacted]"
        assert changed["after"]["delinquent"] is True
        assert changed["details"] == {
            "events": ["evt_2", "evt_3"],
            "personal_fields_changed": ["email"],
        }
        assert card["after"] == {
            "customer_id": "cus_1",
            "card_last4": "[redacted]",
            "card_exp_year": "[redacted]",
        }
        assert ticket == before[ticket["id"]]  # nothing personal: untouched
        # what the rows say, not when: a timestamp's microseconds may read 4242
        said = [{k: row[k] for k in ("before", "after", "details")} for row in after.values()]
        blob = json.dumps(said, default=str)
        assert "jane" not in blob.lower() and "4242" not in blob

        # the append-only guarantee is back for everyone else
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        assert _audit(engine) == after
    finally:
        engine.dispose()
