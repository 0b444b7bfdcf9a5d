"""Every SQL model builds on SQLite and PostgreSQL, documented, with the same results."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, inspect

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.model import load_project, run_project
from tests.support.model_rows import assert_same_rows, fetch_rows
from tests.support.model_seed import seed_all

PROJECT = load_project()


def test_project_discovers_staging_and_marts() -> None:
    groups = {m.group for m in PROJECT.models.values()}
    assert groups == {"staging", "marts"}
    for model in PROJECT.models.values():
        assert model.materialized == ("view" if model.group == "staging" else "table")
        assert model.name.startswith("stg_") == (model.group == "staging")
        assert model.description, f"{model.path} has no description"
        if model.group == "marts":
            assert model.refs and not model.sources, "marts read staging models only"
        else:
            assert model.sources and not model.refs, "staging reads domain tables only"


def test_every_model_builds_with_its_documented_columns(engine: Engine) -> None:
    seed_all(engine)
    results = run_project(engine, PROJECT)
    assert set(results) == set(PROJECT.models)
    inspector = inspect(engine)
    for name, result in results.items():
        model = PROJECT.models[name]
        assert result.row_count > 0, f"{name} is empty on seeded data"
        kind_names = (
            inspector.get_view_names()
            if model.materialized == "view"
            else inspector.get_table_names()
        )
        assert name in kind_names
        columns = [c["name"] for c in inspector.get_columns(name)]
        assert sorted(columns) == sorted(model.columns), f"{model.path}: docs differ from columns"


def test_rebuild_swaps_atomically_and_switches_kind(engine: Engine) -> None:
    seed_all(engine)
    first = run_project(engine, PROJECT)
    again = run_project(engine, PROJECT)
    assert {k: r.row_count for k, r in first.items()} == {k: r.row_count for k, r in again.items()}
    tables = inspect(engine).get_table_names()
    assert not [t for t in tables if t.endswith("__building")]


@pytest.mark.postgres
def test_sqlite_and_postgresql_give_the_same_rows(fresh_sqlite_url: str, fresh_pg_url: str) -> None:
    engines = [make_engine(fresh_sqlite_url), make_engine(fresh_pg_url)]
    now = datetime.now(UTC)
    try:
        for eng in engines:
            seed_all(eng, now)
            run_project(eng, PROJECT)
        for name in PROJECT.models:
            assert_same_rows(fetch_rows(engines[0], name), fetch_rows(engines[1], name), name)
    finally:
        for eng in engines:
            eng.dispose()


def test_models_build_while_processing_writes_on_sqlite(fresh_sqlite_url: str) -> None:
    """The embedded default serves the demo's concurrency: model rebuilds and event
    processing at once (each with its own engine, as separate Dagster runs have), on
    one SQLite file, both finish without "database is locked".

    A model build reads the catalog before it drops and creates; a deferred SQLite
    transaction that read before another writer committed cannot write any more (no
    busy wait helps), so builds take the write lock when they begin.
    """
    import threading

    from stripe_pipeline.process.runner import process_pending
    from tests.support.queue_events import event_doc, load

    seed_all(make_engine(fresh_sqlite_url))
    rounds, per_round = 30, 40
    errors: list[BaseException] = []
    builds = 0
    processing_done = threading.Event()

    def processing() -> None:
        engine = make_engine(fresh_sqlite_url)
        try:
            for r in range(rounds):
                load(engine, [event_doc(r * per_round + n) for n in range(per_round)])
                report = process_pending(engine, batch_size=5)
                assert report.processed == per_round, report
        except BaseException as exc:
            errors.append(exc)
        finally:
            processing_done.set()
            engine.dispose()

    def models() -> None:
        nonlocal builds
        engine = make_engine(fresh_sqlite_url)
        try:
            while not processing_done.is_set() or builds < 3:
                run_project(engine, PROJECT)
                builds += 1
        except BaseException as exc:
            errors.append(exc)
            processing_done.wait()
        finally:
            engine.dispose()

    threads = [threading.Thread(target=processing), threading.Thread(target=models)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
    assert builds >= 3
    engine = make_engine(fresh_sqlite_url)
    with engine.connect() as conn:
        statuses = dict(
            conn.exec_driver_sql(
                "SELECT status, count(*) FROM stripe_events "
                "WHERE stripe_event_id LIKE 'evt_0%' GROUP BY status"
            ).all()
        )
    assert statuses == {"processed": rounds * per_round}
    assert set(run_project(engine, PROJECT)) == set(PROJECT.models)
