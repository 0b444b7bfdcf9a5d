"""Payment-attempt limits in the database, and the append-only audit log."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.recover.limits import AttemptLimits, AttemptRequest, reserve

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _card(pm: str = "pm_1", fp: str | None = "fp_card", customer: str = "cus_1") -> AttemptRequest:
    return AttemptRequest(card_fingerprint=fp, payment_method_id=pm, customer_id=customer)


def test_sixteenth_attempt_on_a_card_in_30_days_is_refused(engine) -> None:
    for day in range(15):
        assert reserve(engine, _card(), now=T0 + timedelta(days=day)).allowed
    refused = reserve(engine, _card(), now=T0 + timedelta(days=15))
    assert not refused.allowed and refused.reason == "card_30d"
    assert refused.retry_after == T0 + timedelta(days=30, seconds=1)
    # the same card through another payment method is still the same card
    assert not reserve(engine, _card(pm="pm_2"), now=T0 + timedelta(days=16)).allowed
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT decision, reason FROM payment_attempts ORDER BY id")).all()
    assert [r[0] for r in rows].count("allowed") == 15
    assert rows[-1] == ("refused", "card_30d")  # refusals are recorded with their reason
    # 30 days after the first attempt, a slot frees up
    assert reserve(engine, _card(), now=T0 + timedelta(days=30, seconds=2)).allowed


def test_daily_cap_per_card_and_customer_window(engine) -> None:
    for i in range(4):
        assert reserve(engine, _card(), now=T0 + timedelta(minutes=i)).allowed
    assert reserve(engine, _card(), now=T0 + timedelta(minutes=5)).reason == "card_daily"
    assert reserve(engine, _card(), now=T0 + timedelta(days=1, minutes=1)).allowed
    limits = AttemptLimits.configured(customer_per_day=2)
    assert reserve(engine, _card(fp="a", customer="cus_9"), limits, now=T0).allowed
    assert reserve(engine, _card(fp="b", customer="cus_9"), limits, now=T0).allowed
    third = reserve(engine, _card(fp="c", customer="cus_9"), limits, now=T0)
    assert third.reason == "customer_daily"


def test_card_key_falls_back_to_payment_method() -> None:
    assert _card(fp=None).card_key == "pm:pm_1"
    assert _card().card_key == "fp:fp_card"


@pytest.mark.postgres
def test_racing_threads_never_exceed_the_cap_on_postgresql(fresh_pg_url: str) -> None:
    engine = make_engine(fresh_pg_url, pool_size=10)
    limits = AttemptLimits.configured(
        card_per_day=100, card_per_30_days=15, customer_per_day=100, customer_per_30_days=100
    )
    try:
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda _: reserve(engine, _card(), limits, now=T0), range(60)))
        assert sum(r.allowed for r in results) == 15
        with engine.connect() as conn:
            assert (
                conn.execute(
                    text("SELECT count(*) FROM payment_attempts WHERE decision = 'allowed'")
                ).scalar()
                == 15
            )
    finally:
        engine.dispose()


def test_racing_threads_never_exceed_the_cap_on_sqlite(fresh_sqlite_url: str) -> None:
    engine = make_engine(fresh_sqlite_url)
    limits = AttemptLimits.configured(
        card_per_day=100, card_per_30_days=15, customer_per_day=100, customer_per_30_days=100
    )
    try:
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: reserve(engine, _card(), limits, now=T0), range(30)))
        assert sum(r.allowed for r in results) == 15
    finally:
        engine.dispose()


def test_audit_log_refuses_update_and_delete(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO audit_log (actor, action, object_type) VALUES ('t', 'x', 'payment')")
        )
    for statement in ("UPDATE audit_log SET actor = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor FROM audit_log")).scalar_one() == "t"


def test_code_has_no_path_to_update_or_delete_the_audit_log() -> None:
    package = Path(__file__).resolve().parents[1] / "stripe_pipeline"
    forbidden = re.compile(
        r"(update|delete)\(\s*(AUDIT_LOG|AuditLog)|"
        r"(UPDATE|DELETE\s+FROM|TRUNCATE)\s+audit_log",
        re.IGNORECASE,
    )
    offenders = []
    for path in package.rglob("*.py"):
        if "migrations" in path.parts:
            continue  # the migration creates the triggers that refuse these
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if forbidden.search(line):
                offenders.append(f"{path}:{number}: {line.strip()}")
    assert offenders == []
