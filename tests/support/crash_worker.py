"""A processing run that dies mid-batch: used by the crash test (killed with SIGKILL).

Usage: python -m tests.support.crash_worker URL READY_FILE BATCH_SIZE LEASE_SECONDS

The first batch commits normally; during the second batch, after applying (uncommitted),
it touches READY_FILE and sleeps until it is killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.runner import process_pending
from tests.support.queue_events import MarkingApply, real_apply_available


def main() -> None:
    url, ready, batch_size, lease = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    batches = []

    def hang_in_second_batch(events) -> None:
        batches.append(len(events))
        if len(batches) == 2:
            ready.write_text("applied, not committed")
            time.sleep(600)

    apply = MarkingApply(use_real=real_apply_available(), after=hang_in_second_batch)
    process_pending(
        make_engine(url),
        policy=RetryPolicy(),
        batch_size=batch_size,
        lease_seconds=float(lease),
        worker_id="crashing-worker",
        apply=apply,
    )


if __name__ == "__main__":
    main()
