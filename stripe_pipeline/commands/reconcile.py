"""``stripe-pipeline reconcile``: one reconciliation run against the Stripe API, and
``stripe-pipeline backfill``: the same run over the account's whole history.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

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
    from stripe_pipeline.stripe_api.ratelimit import RateLimiter

    settings = load_settings()
    if not settings.stripe_api_key:
        return fail("STRIPE_API_KEY is not set: reconciliation reads the Stripe API")
    engine = app_engine()
    # the deployment's one budget: Dagster runs going on at the same time share it
    api = StripeApi(
        settings.stripe_api_key,
        api_base=settings.stripe_api_base,
        limiter=RateLimiter.shared(engine, settings.stripe_api_key),
        audit_engine=engine,
        actor="reconciliation:cli",
    )
    backfill = args.func is cmd_backfill
    try:
        config = RunConfig(
            object_types=tuple(args.object_type) if args.object_type else RunConfig.object_types,
            full_run=args.full or (backfill and args.since is None),
            window_start=args.since,
            window_end=args.until if args.until is not None or not backfill else _today(),
            overlap_minutes=getattr(args, "overlap_minutes", 60),
            repair=not args.no_repair,
            server_filter=not args.no_server_filter,
            triggered_by=default_actor(),
            resume=backfill or args.resume,
        )
        result = run_reconciliation(engine, api, config)
    except (ValueError, RunInProgress, ReconciliationFailed) as exc:
        return fail(str(exc))
    finally:
        api.limiter.close()
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
    reconcile.add_argument(
        "--resume",
        action="store_true",
        help="take over a killed run over the same window: only its unfinished slices are listed",
    )
    reconcile.add_argument("--json", action="store_true", help="print the result as JSON")
    reconcile.set_defaults(func=cmd_reconcile)

    backfill = commands.add_parser(
        "backfill",
        help="list every object from --since (default: the account's beginning) into the tables",
        description="The full historical backfill: every reconciled resource created in "
        "[--since, --until] is listed (in parallel time slices, under the shared rate "
        "limit) and landed through reconciliation's repair path, plus the events Stripe "
        "still keeps (30 days). --until defaults to today 00:00 UTC (the nightly run covers "
        "today), so running the same command again after a crash resumes it: completed "
        "slices are not listed again.",
    )
    backfill.add_argument("--since", type=timestamp, help="created >= (Unix time or ISO date)")
    backfill.add_argument("--until", type=timestamp, help="created <= (default: today 00:00 UTC)")
    backfill.add_argument(
        "--object-type", action="append", choices=OBJECT_TYPES, help="repeat to narrow"
    )
    backfill.add_argument("--no-repair", action="store_true", help="record, never repair")
    backfill.add_argument(
        "--no-server-filter", action="store_true", help="filter by created on this side"
    )
    backfill.add_argument("--json", action="store_true", help="print the result as JSON")
    backfill.set_defaults(func=cmd_backfill, full=False, resume=True)


def cmd_backfill(args: argparse.Namespace) -> int:
    """``stripe-pipeline backfill``: a reconciliation run over the whole history."""
    return cmd_reconcile(args)


def _today() -> int:
    """Today 00:00 UTC: a backfill's default end, the same all day (so a rerun resumes)."""
    now = datetime.now(UTC)
    return int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp())
