"""``stripe-pipeline reconcile``: one reconciliation run against the Stripe API (what
the nightly job runs).
"""

from __future__ import annotations

import argparse

from stripe_pipeline.commands.common import (
    app_engine,
    default_actor,
    fail,
    positive_int,
    print_json,
    timestamp,
)
from stripe_pipeline.config import load_settings


def cmd_reconcile(args: argparse.Namespace) -> int:
    from stripe_pipeline.reconcile.run import (
        ReconciliationFailed,
        RunConfig,
        RunInProgress,
        run_reconciliation,
    )
    from stripe_pipeline.stripe_api.client import StripeApi

    settings = load_settings()
    if not settings.stripe_api_key:
        return fail("STRIPE_API_KEY is not set: reconciliation reads the Stripe API")
    engine = app_engine()
    api = StripeApi(
        settings.stripe_api_key,
        api_base=settings.stripe_api_base,
        audit_engine=engine,
        actor="reconciliation:cli",
    )
    try:
        config = RunConfig(
            object_types=tuple(args.object_type) if args.object_type else RunConfig.object_types,
            full_run=args.full,
            window_start=args.since,
            window_end=args.until,
            overlap_minutes=args.overlap_minutes,
            repair=not args.no_repair,
            server_filter=not args.no_server_filter,
            triggered_by=default_actor(),
        )
        result = run_reconciliation(engine, api, config)
    except (ValueError, RunInProgress, ReconciliationFailed) as exc:
        return fail(str(exc))
    if args.json:
        print_json(result.__dict__)
    else:
        print(f"reconciliation run {result.run_id}: {result.status}")
        print_json(result.counts)
    return 0


def add_reconcile_command(commands: argparse._SubParsersAction) -> None:
    from stripe_pipeline.reconcile.run import OBJECT_TYPES

    reconcile = commands.add_parser(
        "reconcile",
        help="reconcile local tables against the Stripe API once (the nightly job)",
        description="Backfill events missing from stripe_events over the window, compare "
        "payments, refunds, disputes, subscriptions and invoices with the API, repair what "
        "is deterministic and ticket the rest. The window defaults to the stored "
        "watermark minus the overlap (at most the 30 days Stripe keeps events).",
    )
    reconcile.add_argument("--full", action="store_true", help="list every object, no window")
    reconcile.add_argument("--since", type=timestamp, help="window start (Unix time or ISO)")
    reconcile.add_argument("--until", type=timestamp, help="window end (Unix time or ISO)")
    reconcile.add_argument(
        "--overlap-minutes", type=positive_int, default=60, help="re-check before the watermark"
    )
    reconcile.add_argument(
        "--object-type", action="append", choices=OBJECT_TYPES, help="repeat to narrow"
    )
    reconcile.add_argument("--no-repair", action="store_true", help="record, never repair")
    reconcile.add_argument(
        "--no-server-filter",
        action="store_true",
        help="filter by created on this side (for fakes such as localstripe)",
    )
    reconcile.add_argument("--json", action="store_true", help="print the result as JSON")
    reconcile.set_defaults(func=cmd_reconcile)
