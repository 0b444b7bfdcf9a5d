"""A large valid stream with hostile deliveries mixed in, through the real receiver.

About 1,000 valid events (some delivered twice, as Stripe does) and about 15% hostile
deliveries (``tests/support/hostile.py``: over-long ids, odd signatures, future
timestamps, unknown endpoints, malformed JSON, unknown types, events that processing
refuses) are sent in a shuffled order from several threads, then processed. Every
valid event must be applied exactly once; every hostile one must end terminal:
refused by the receiver with a 4xx, ignored (unknown type), or one dead letter on the
single ticket of its cause.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import text

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.runner import process_pending
from tests.support.hostile import HOSTILE, Delivery, valid_delivery
from tests.support.queue_events import MarkingApply, marks
from tests.support.receiver_server import SECRET, Client, fresh_source, start_server

pytestmark = pytest.mark.slow

VALID = 1000
HOSTILE_SHARE = 0.15
SEED = 20261128


def _stream(rng: random.Random) -> list[Delivery]:
    valid = [valid_delivery(n, SECRET) for n in range(VALID)]
    again = rng.sample(valid, VALID // 20)  # Stripe delivers at least once
    weights = [h.weight for h in HOSTILE]
    hostile = [
        rng.choices(HOSTILE, weights)[0].build(rng, SECRET)
        for _ in range(int(VALID * HOSTILE_SHARE))
    ]
    # every builder at least once, whatever the draw
    hostile += [h.build(rng, SECRET) for h in HOSTILE]
    stream = valid + again + hostile
    rng.shuffle(stream)
    return stream


def _send(port: int, deliveries: list[Delivery], answers: list[tuple[Delivery, int]]) -> None:
    valid_client = Client(port, fresh_source())
    for delivery in deliveries:
        # hostile ones from addresses of their own: the invalid-request limiter (429) is
        # a fine answer too, but each case should reach the check it is about
        client = valid_client if delivery.expect == "applied" else Client(port, fresh_source())
        headers = {"Content-Type": "application/json", **delivery.extra_headers}
        if delivery.signature is not None:
            headers["Stripe-Signature"] = delivery.signature
        reply = client.request("POST", delivery.path, delivery.body, headers)
        answers.append((delivery, reply.status))


def test_hostile_deliveries_in_a_valid_stream(database_url: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    stream = _stream(rng)
    backend = database_url.partition(":")[0].partition("+")[0]
    server = start_server(backend, tmp_path, db_url=database_url, serve_url=database_url)
    answers: list[tuple[Delivery, int]] = []
    try:
        threads = [
            threading.Thread(target=_send, args=(server.port, stream[i::4], answers))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    assert len(answers) == len(stream)
    by_expect: dict[str, list[tuple[Delivery, int]]] = defaultdict(list)
    for delivery, status in answers:
        by_expect[delivery.expect].append((delivery, status))

    # the receiver: valid and stored-hostile deliveries acknowledged, the rest refused
    assert not [s for _, s in answers if s >= 500]
    assert {s for _, s in by_expect["applied"]} == {200}
    for expect in ("ignored", "dead_letter"):
        assert {s for _, s in by_expect[expect]} == {200}, expect
    refused = Counter(s for _, s in by_expect["rejected"])
    assert refused and all(400 <= s < 500 for s in refused), refused

    engine = make_engine(database_url)
    try:
        # processing, with the real appliers (MarkingApply counts each application)
        apply = MarkingApply(use_real=True)
        report = process_pending(
            engine, policy=RetryPolicy(max_retries=2), batch_size=250, apply=apply
        )
        again = process_pending(engine, policy=RetryPolicy(max_retries=2), apply=apply)
        assert again.claimed == 0  # nothing is left waiting: every event is terminal

        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT stripe_event_id, status, support_ticket_id FROM stripe_events")
            ).all()
            tickets = {
                r.id: r
                for r in conn.execute(
                    text("SELECT id, dedupe_key, occurrences FROM payment_support_tickets")
                )
            }
        state = {r[0]: (r[1], r[2]) for r in rows}

        valid_ids = {d.event_id for d, _ in by_expect["applied"]}
        assert len(valid_ids) == VALID
        applied = marks(engine)
        assert {i: applied.get(i) for i in valid_ids} == dict.fromkeys(valid_ids, 1)
        assert {state[i][0] for i in valid_ids} == {"processed"}

        # refused deliveries left nothing behind
        refused_ids = {d.event_id for d, _ in by_expect["rejected"] if d.event_id}
        assert not refused_ids & set(state)
        assert {state[d.event_id][0] for d, _ in by_expect["ignored"]} == {"ignored"}

        # one dead letter per failing event, one ticket per cause, counting them all
        groups: dict[str, set[str]] = defaultdict(set)
        keys: dict[str, str | None] = {}
        for delivery, _ in by_expect["dead_letter"]:
            assert state[delivery.event_id][0] == "dead_letter", (delivery.group, delivery.body)
            groups[delivery.group].add(delivery.event_id)
            keys[delivery.group] = delivery.ticket_key
        ticket_of_group = {}
        for group, ids in groups.items():
            (ticket_id,) = {state[i][1] for i in ids}
            assert ticket_id is not None, group
            assert tickets[ticket_id].occurrences == len(ids), group
            if keys[group]:
                assert tickets[ticket_id].dedupe_key == keys[group]
            ticket_of_group[group] = ticket_id
        assert len(set(ticket_of_group.values())) == len(groups)  # no two causes share one
        assert set(tickets) == set(ticket_of_group.values())  # and no other ticket exists
        assert report.dead_lettered == sum(len(ids) for ids in groups.values())
        print(
            f"{backend}: {len(stream)} deliveries, {VALID} valid applied once, "
            f"refused {dict(refused)}, {report.dead_lettered} dead letters on "
            f"{len(tickets)} tickets"
        )
    finally:
        engine.dispose()
