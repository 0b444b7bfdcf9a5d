"""Slow clients never starve the receiver (``stripe-pipeline serve`` as it runs).

Fifty connections trickle headers, trickle bodies or stall after the request line
(and reconnect whenever the receiver drops them) while valid signed deliveries are
sent: every delivery is answered, with p99 under one second (the acceptance bound of
the issue: generous on a loaded 2-core machine; measured well below it), and the
slow connections are cut at the read deadline with 408.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.receiver_server import fresh_source, make_event, start_server
from tests.support.slowloris import Slowloris, percentile, timed_deliveries

pytestmark = pytest.mark.slow

READ_TIMEOUT = 2  # seconds: short, so the test sees slow connections cut and replaced


def test_fifty_slow_connections_do_not_delay_valid_deliveries(
    database_url: str, tmp_path: Path
) -> None:
    backend = database_url.partition(":")[0].partition("+")[0]
    server = start_server(
        backend,
        tmp_path,
        db_url=database_url,
        serve_url=database_url,
        env={"STRIPE_WEBHOOK_READ_TIMEOUT": str(READ_TIMEOUT)},
    )
    try:
        client = server.client()
        sent: list[str] = []

        def deliver() -> int:
            event = make_event()
            status = client.post_event(event).status
            sent.append(event["id"])
            return status

        with Slowloris(server.port, count=50, source=fresh_source()) as attack:
            time.sleep(0.5)  # every slow connection has started its request
            latencies, statuses = timed_deliveries(deliver, threads=4, seconds=READ_TIMEOUT * 2.5)
            live = attack.live
        p99 = percentile(latencies, 0.99)
        summary = (
            f"{backend}: {len(latencies)} deliveries, p50 {percentile(latencies, 0.5) * 1000:.1f} "
            f"ms, p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, with {live} slow "
            f"connections open ({attack.opened} opened, answered {dict(attack.answered)})"
        )
        print(summary)
        assert statuses == {200: len(latencies)}, summary
        assert p99 < 1.0, summary
        assert len(latencies) >= 50, summary
        # the slow ones were cut at the deadline (and came back), not served forever
        assert attack.answered[408] >= 50 and set(attack.answered) == {408}, summary
        assert server.stored_ids(sent) == set(sent)
        metrics = server.client("127.0.0.1").request("GET", "/metrics").body.decode()
        found = re.search(r"^stripe_webhook_client_timeouts_total (\S+)$", metrics, re.M)
        assert found and float(found.group(1)) >= attack.answered[408], metrics[-500:]
    finally:
        server.stop()
