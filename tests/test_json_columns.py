"""JSON columns give back what was stored, whatever the JSON value's kind.

Drill finding: on SQLite a column declared ``JSON`` has numeric affinity, so a bare
number stored in it (a discrepancy's period end) came back as an integer, which the
JSON decoder refused: the nightly run failed after its work, while showing its preview.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from stripe_pipeline.db.models import ReconciliationDiscrepancy, ReconciliationRun
from stripe_pipeline.defs.reconciliation.assets import preview_markdown, run_preview

VALUES: list[Any] = [
    1735689600,
    -3,
    2.5,
    0,
    "1735689600",
    "succeeded",
    "",
    None,
    True,
    {"a": [1, "b", None]},
    [1, 2],
    {"n": 1.25},
]
TABLE = ReconciliationDiscrepancy.__table__


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_discrepancy_values_round_trip(engine: Engine, value: Any) -> None:
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(ReconciliationRun.__table__)
            .values(status="succeeded")
            .returning(ReconciliationRun.__table__.c.id)
        ).scalar_one()
        conn.execute(
            insert(TABLE).values(
                run_id=run_id,
                first_seen_run_id=run_id,
                object_type="subscription",
                object_id="sub_1",
                kind="field_mismatch",
                field="current_period_end",
                local_value=value,
                remote_value=value,
                status="open",
            )
        )
    with engine.connect() as conn:
        local, remote = conn.execute(select(TABLE.c.local_value, TABLE.c.remote_value)).one()
    assert (local, remote) == (value, value)
    assert type(local) is type(value)
    [row] = run_preview(engine, run_id)
    assert row["local_value"] == value
    assert "subscription | sub_1 | field_mismatch | current_period_end" in preview_markdown([row])
