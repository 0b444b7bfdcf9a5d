"""``stripe-pipeline erase`` and ``retention``: a customer's erasure and the
retention sweep of old payloads.
"""

from __future__ import annotations

import argparse

from stripe_pipeline.commands.common import (
    app_engine,
    default_actor,
    fail,
    print_json,
)


def cmd_erase(args: argparse.Namespace) -> int:
    from stripe_pipeline.privacy.erase import ErasureError, erase_customer

    try:
        result = erase_customer(
            app_engine(), args.customer, actor=args.actor, reason="request", dry_run=args.dry_run
        )
    except ErasureError as exc:
        return fail(str(exc))
    if args.json:
        print_json(result.__dict__)
        return 0
    verb = "would change" if args.dry_run else "changed"
    again = "" if result.first_erasure else " (erased before: this run took what arrived since)"
    print(f"{result.customer_id}: {verb} {result.rows_changed} row(s){again}")
    for table, count in result.counts.items():
        if count:
            print(f"  {table}: {count}")
    if not args.dry_run:
        print("recorded in erasures; processing, reconciliation and backfill keep it erased")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from stripe_pipeline.config import load_privacy_options
    from stripe_pipeline.privacy.daily import run_daily_privacy

    result = run_daily_privacy(
        app_engine(), load_privacy_options(), actor=args.actor, dry_run=args.dry_run, full=args.full
    )
    summary = result.as_dict()
    if args.json:
        print_json(summary)
        return 0
    retention = summary["retention"] or {}
    verb = "would" if args.dry_run else "did"
    print(
        f"retention ({verb}): payloads dropped to envelope {retention.get('payloads_dropped', 0)}"
        f" (held by open tickets {retention.get('payloads_held_by_tickets', 0)}), deliveries "
        f"deleted {retention.get('deliveries_deleted', 0)}, resolved tickets deleted "
        f"{retention.get('tickets_deleted', 0)}, in {retention.get('seconds', 0)} s"
    )
    print(
        f"deleted customers erased: {len(summary['deleted_customers_erased'])}; events of "
        f"erased customers blanked: {(summary['sweep'] or {}).get('events_redacted', 0)}"
    )
    return 0


def add_privacy_commands(commands: argparse._SubParsersAction) -> None:
    erase = commands.add_parser(
        "erase",
        help="erase a customer's personal data everywhere (GDPR art. 17 / CCPA request)",
        description="Blank the customer's email, name, phone, addresses, card digits, "
        "descriptions and dispute evidence in every table, including the raw payloads of "
        "their events; ids, amounts, statuses and dates stay, so marts and reconciliation "
        "still add up. Recorded in erasures and the audit log; safe to run again. "
        "See docs/privacy.md.",
    )
    erase.add_argument("--customer", required=True, metavar="CUS_ID", help="Stripe customer id")
    erase.add_argument("--actor", default=default_actor(), help="who, for the audit log")
    erase.add_argument("--dry-run", action="store_true", help="count, change nothing")
    erase.add_argument("--json", action="store_true", help="print the result as JSON")
    erase.set_defaults(func=cmd_erase)

    retention = commands.add_parser(
        "retention",
        help="the daily privacy run: retention, due erasures of deleted customers",
        description="Drop raw payloads of processed/ignored events older than "
        "STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS to their envelope, delete deliveries and "
        "resolved tickets past their age, erase customers deleted in Stripe more than "
        "STRIPE_PIPELINE_ERASE_AFTER_DELETE_DAYS ago, and blank new events of erased "
        "customers. Queued and dead-lettered events and events of open tickets are kept.",
    )
    retention.add_argument("--dry-run", action="store_true", help="count, change nothing")
    retention.add_argument(
        "--full", action="store_true", help="rescan every event, not only since the last run"
    )
    retention.add_argument("--actor", default=default_actor(), help="who, for the records")
    retention.add_argument("--json", action="store_true", help="print the result as JSON")
    retention.set_defaults(func=cmd_retention)
