"""A reconciliation run in its own process, to be killed by the resume test.

``python -m tests.support.reconcile_worker '<json args>'``: one ``run_reconciliation``
over a window through the real client against ``api_base`` (the Stripe-shaped fake);
the last stdout line is the run's counts as JSON.
"""

from __future__ import annotations

import json
import sys

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.stripe_api.client import StripeApi


def main() -> None:
    args = json.loads(sys.argv[1])
    engine = make_engine(args["database_url"])
    api = StripeApi(
        "sk_test_reconcile_worker", api_base=args["api_base"], requests_per_second=10_000
    )
    config = RunConfig(
        object_types=tuple(args["object_types"]),
        backfill=False,
        window_start=args["start"],
        window_end=args["end"],
        listing_workers=args.get("workers", 40),
        resume=args.get("resume", False),
    )
    result = run_reconciliation(engine, api, config, now=args["end"] + 60)
    print(json.dumps(result.counts, default=str))


if __name__ == "__main__":
    main()
