"""``stripe-pipeline process``: process due events once, as the Dagster job does
(one-shot, for cron-less setups and debugging), with the processor every entry
point builds (``stripe_pipeline.pipeline``).
"""

from __future__ import annotations

import argparse

from stripe_pipeline.commands.common import (
    app_engine,
    fail,
    positive_int,
    print_json,
)
from stripe_pipeline.config import load_processing_options


def retry_policy_from_env():
    """The retry policy of the ``STRIPE_PIPELINE_RETRY_*`` variables (same as Dagster's)."""
    from stripe_pipeline.process.backoff import RetryPolicy

    o = load_processing_options()
    return RetryPolicy(
        base_seconds=o.retry_base_seconds,
        factor=o.retry_factor,
        cap_seconds=o.retry_cap_seconds,
        max_retries=o.retry_max_retries,
        jitter=o.retry_jitter,  # type: ignore[arg-type]
    )


def cmd_process(args: argparse.Namespace) -> int:
    from stripe_pipeline.pipeline import build_processor
    from stripe_pipeline.process.runner import process_pending
    from stripe_pipeline.support.notify import build_notifier

    try:
        policy = retry_policy_from_env()
    except ValueError as exc:
        return fail(f"retry settings: {exc}")
    report = process_pending(
        app_engine(),
        policy=policy,
        workers=load_processing_options().workers,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        lease_seconds=args.lease_seconds,
        processor=build_processor(build_notifier()),
    )
    if args.json:
        print_json(report.as_metadata())
    else:
        print(
            f"claimed {report.claimed} events in {report.batches} batch(es), "
            f"{report.duration_seconds:.2f}s: processed {report.processed}, ignored "
            f"{report.ignored}, retries scheduled {report.retries_scheduled}, dead-lettered "
            f"{report.dead_lettered}, tickets opened {report.tickets_opened}; "
            f"still due {report.remaining_due}"
        )
    return 0


def add_process_command(commands: argparse._SubParsersAction) -> None:
    process = commands.add_parser(
        "process",
        help="process due events once (what the Dagster job runs), then exit",
        description="Claim due events in batches and apply them until none are due "
        "(or --max-batches). Safe to run beside Dagster: claims never overlap.",
    )
    process.add_argument("--batch-size", type=positive_int, default=2000, help="events per batch")
    process.add_argument("--max-batches", type=positive_int, default=None, help="stop after N")
    process.add_argument(
        "--lease-seconds", type=positive_int, default=300, help="claim lease (default 300)"
    )
    process.add_argument("--json", action="store_true", help="print the report as JSON")
    process.set_defaults(func=cmd_process)
