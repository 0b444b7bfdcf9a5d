"""The app database's engine on both backends: JSON columns keep every JSON value,
and SQLite writers that read first wait for the write lock instead of failing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import OperationalError

from stripe_pipeline.db.engine import begin_write, make_engine
from stripe_pipeline.db.models import (
    PaymentSupportTicket,
    ReconciliationDiscrepancy,
    ReconciliationRun,
)
from stripe_pipeline.defs.reconciliation.assets import preview_markdown, run_preview

# bare JSON scalars are what broke: SQLite gives a column declared JSON numeric
# affinity, so a number is stored as INTEGER/REAL and read back as a Python number
VALUES: list[Any] = [
    1795750000,  # a subscription's period end
    -5,
    1.5,
    "succeeded",
    "123",  # a string that looks like a number stays a string
    "",
    None,
    True,
    {"status": "active", "current_period_end": 1795750000, "items": [1, 2]},
    [1, "two", None],
    {},
]


def _new_run(engine: Engine) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(ReconciliationRun.__table__).returning(ReconciliationRun.__table__.c.id)
        ).scalar_one()


def test_json_columns_round_trip_numbers_strings_null_objects_and_lists(engine: Engine) -> None:
    run_id = _new_run(engine)
    d = ReconciliationDiscrepancy.__table__
    rows = [
        {
            "run_id": run_id,
            "first_seen_run_id": run_id,
            "object_type": "subscription",
            "object_id": f"sub_{n}",
            "kind": "field_mismatch",
            "field": "current_period_end",
            "local_value": value,
            "remote_value": value,
        }
        for n, value in enumerate(VALUES)
    ]
    with engine.begin() as conn:
        conn.execute(insert(d), rows)
    with engine.connect() as conn:
        stored = conn.execute(select(d.c.local_value, d.c.remote_value).order_by(d.c.id)).all()
    assert [tuple(r) for r in stored] == [(v, v) for v in VALUES]
    assert [type(r.local_value) for r in stored] == [type(v) for v in VALUES]


@pytest.mark.parametrize("value", [1795750000, "eur", None, {"id": "re_1", "amount": 300}])
def test_run_preview_shows_any_json_value(engine: Engine, value: Any) -> None:
    run_id = _new_run(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(ReconciliationDiscrepancy.__table__).values(
                run_id=run_id,
                first_seen_run_id=run_id,
                object_type="subscription",
                object_id="sub_1",
                kind="field_mismatch",
                field="current_period_end",
                local_value=value,
                remote_value=1795760000,
            )
        )
    [row] = run_preview(engine, run_id)
    assert row["local_value"] == value and row["remote_value"] == 1795760000
    shown = "" if value is None else str(value)
    assert f"| current_period_end | {shown} | 1795760000 | open |" in preview_markdown([row])


def _ticket_row(n: int) -> dict[str, Any]:
    return {"issue_type": "test", "dedupe_key": f"k{n}", "title": "t", "priority": "low"}


def test_begin_write_commits_or_rolls_back_on_both_backends(engine: Engine) -> None:
    tickets = PaymentSupportTicket.__table__
    with begin_write(engine) as conn:
        conn.execute(insert(tickets).values(_ticket_row(1)))
    with pytest.raises(RuntimeError), begin_write(engine) as conn:
        conn.execute(insert(tickets).values(_ticket_row(2)))
        raise RuntimeError("rolled back")
    with engine.connect() as conn:
        assert conn.execute(select(tickets.c.dedupe_key)).scalars().all() == ["k1"]


def test_sqlite_writer_that_read_first_waits_its_turn(fresh_sqlite_url: str) -> None:
    """A deferred SQLite transaction that read before another writer committed can never
    write (its snapshot is stale: "database is locked" at once, whatever the busy
    timeout); ``begin_write`` takes the write lock first, so the other writer waits."""
    tickets = PaymentSupportTicket.__table__
    engine = make_engine(fresh_sqlite_url)
    other = make_engine(fresh_sqlite_url)
    count = select(func.count()).select_from(tickets)

    with engine.connect() as conn, conn.begin():
        conn.execute(count).scalar_one()  # a read: the snapshot is taken
        with other.begin() as second:
            second.execute(insert(tickets).values(_ticket_row(1)))
        with pytest.raises(OperationalError, match="database is locked"):
            conn.execute(insert(tickets).values(_ticket_row(2)))

    order: list[str] = []
    with begin_write(engine) as conn:
        seen = conn.execute(count).scalar_one()
        waiting = threading.Thread(target=_insert_after_lock, args=(other, order))
        waiting.start()
        waiting.join(timeout=0.3)  # it waits for our write lock (busy timeout 5 s)
        conn.execute(insert(tickets).values(_ticket_row(3)))
        order.append("first")
    waiting.join(timeout=30)
    assert seen == 1 and order == ["first", "second"]
    with engine.connect() as conn:
        assert conn.execute(count).scalar_one() == 3
    engine.dispose()
    other.dispose()


def _insert_after_lock(engine: Engine, order: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(PaymentSupportTicket.__table__).values(_ticket_row(4)))
        order.append("second")
