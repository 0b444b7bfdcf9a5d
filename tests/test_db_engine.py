"""The app database's engine on both backends: JSON columns keep every JSON value."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from stripe_pipeline.db.models import ReconciliationDiscrepancy, ReconciliationRun
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
