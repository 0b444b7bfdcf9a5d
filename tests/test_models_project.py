"""Model discovery, rendering and errors: a broken model names its file."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.model import ModelError, load_project, materialize, render_model, run_project


def write(root: Path, relative: str, sql: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sql)
    return path


def test_refs_sources_config_and_order(tmp_path: Path) -> None:
    write(tmp_path, "staging/stg_a.sql", "SELECT id FROM {{ source('stripe_events') }}")
    write(
        tmp_path,
        "marts/m.sql",
        "{{ config(materialized='view') }}\nSELECT * FROM {{ ref('stg_a') }}",
    )
    write(tmp_path, "marts/n.sql", "-- config: materialized=table\nSELECT * FROM {{ ref('m') }}")
    project = load_project(tmp_path)
    assert [m.name for m in project.order()] == ["stg_a", "m", "n"]
    assert project.models["stg_a"].materialized == "view"
    assert project.models["m"].materialized == "view"
    assert project.models["n"].materialized == "table"
    assert project.models["m"].refs == ("stg_a",)
    assert project.sources == ["stripe_events"]
    assert project.downstream("stg_a") == ["m", "n"]
    assert render_model(project.models["n"], project, "sqlite").endswith("FROM m")


def test_code_version_follows_the_sql(tmp_path: Path) -> None:
    path = write(tmp_path, "marts/m.sql", "SELECT 1 AS x")
    before = load_project(tmp_path).models["m"].code_version
    path.write_text("SELECT 2 AS x")
    assert load_project(tmp_path).models["m"].code_version != before


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM {{ ref('missing') }}", "ref('missing') names no model"),
        ("SELECT * FROM {{ source('no_such_table') }}", "names no domain table"),
        ("SELECT {{ undefined_macro('x') }}", "cannot render"),
        ("SELECT {{ date_trunc('day' }}", "template syntax error"),
        ("SELECT 1; DROP TABLE stripe_events", "one SELECT"),
        ("DELETE FROM stripe_events", "must be a SELECT"),
    ],
)
def test_template_errors_name_the_file(tmp_path: Path, sql: str, message: str) -> None:
    path = write(tmp_path, "marts/broken_model.sql", sql)
    with pytest.raises(ModelError) as caught:
        project = load_project(tmp_path)
        render_model(project.models["broken_model"], project, "sqlite")
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_cycles_and_bad_config_name_the_file(tmp_path: Path) -> None:
    write(tmp_path, "marts/a.sql", "SELECT * FROM {{ ref('b') }}")
    write(tmp_path, "marts/b.sql", "SELECT * FROM {{ ref('a') }}")
    with pytest.raises(ModelError, match="dependency cycle"):
        load_project(tmp_path)
    other = tmp_path / "other"
    bad = write(other, "marts/c.sql", "-- config: materialized=incremental\nSELECT 1 AS x")
    with pytest.raises(ModelError, match="materialized must be") as caught:
        load_project(other)
    assert caught.value.path == bad


def test_database_error_names_the_file_and_keeps_the_old_table(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path, "marts/flaky.sql", "SELECT 1 AS x")
    project = load_project(tmp_path)
    assert materialize(engine, project, project.models["flaky"]).row_count == 1
    path.write_text("SELECT no_such_column FROM stripe_events")
    project = load_project(tmp_path)
    with pytest.raises(ModelError) as caught:
        materialize(engine, project, project.models["flaky"])
    assert str(path) in str(caught.value) and engine.dialect.name in str(caught.value)
    with engine.connect() as conn:  # the failed build rolled back: the old table remains
        assert conn.execute(text("SELECT x FROM flaky")).scalar_one() == 1


def test_table_and_view_swap_kinds(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "marts/kind.sql", "-- config: materialized=view\nSELECT 1 AS x")
    project = load_project(tmp_path)
    assert run_project(engine, project)["kind"].materialized == "view"
    path.write_text("-- config: materialized=table\nSELECT 1 AS x UNION ALL SELECT 2")
    project = load_project(tmp_path)
    assert run_project(engine, project)["kind"].row_count == 2


def reference_percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def test_percentile_macro_matches_percentile_cont(engine: Engine, tmp_path: Path) -> None:
    rng = random.Random(7)
    groups = {
        f"g{i}": [round(rng.uniform(0, 100), 3) for _ in range(n)]
        for i, n in enumerate([1, 2, 7, 30])
    }
    rows = " UNION ALL ".join(
        f"SELECT '{g}' AS grp, {v} AS v" for g, values in groups.items() for v in values
    )
    # NULLs are ignored, as by percentile_cont
    rows += " UNION ALL SELECT 'g3' AS grp, NULL AS v"
    write(
        tmp_path,
        "marts/pct.sql",
        "WITH raw AS (" + rows + "), ranked AS (SELECT grp, v, "
        "{{ percentile_window('v', 'grp') }} FROM raw) "
        "SELECT grp, {{ percentile_cont(0.5, 'v') }} AS p50, "
        "{{ percentile_cont(0.95, 'v') }} AS p95 FROM ranked GROUP BY grp",
    )
    project = load_project(tmp_path)
    run_project(engine, project)
    with engine.connect() as conn:
        got = {r.grp: (r.p50, r.p95) for r in conn.execute(text("SELECT * FROM pct"))}
    for group, values in groups.items():
        assert math.isclose(got[group][0], reference_percentile(values, 0.5), abs_tol=1e-9)
        assert math.isclose(got[group][1], reference_percentile(values, 0.95), abs_tol=1e-9)
