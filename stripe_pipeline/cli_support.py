"""CLI subcommands for processing, the support workflow, reconciliation and privacy,
registered by ``cli.py``.

``process`` runs the same ``process_pending`` the Dagster asset runs (one-shot, for
cron-less setups and debugging); ``events`` and ``tickets`` are the operator's side
of the error-recovery diagram (replay, AutoRetry, ManualResolution). Handlers return
an exit code; database errors propagate to ``cli.main``, which prints them cleanly.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from stripe_pipeline.config import load_processing_options, load_settings
from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.models import EVENT_STATUSES, TICKET_STATUSES
from stripe_pipeline.db.statuses import FINAL_STATUSES

EXIT_FAILURE = 1


def _engine() -> Engine:
    """The configured database; the embedded SQLite one migrates itself."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    migrate.ensure_schema(engine, auto_migrate=settings.is_embedded_sqlite)
    return engine


def _default_actor() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "operator:cli"


# integer arguments end up in BIGINT columns: a larger one is a usage error, not a
# driver traceback
MAX_INT = 2**63 - 1


def _bounded(number: int) -> int:
    if number > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT}")
    return number


def _timestamp(value: str) -> int:
    """Epoch seconds or an ISO date/time (UTC unless it says otherwise)."""
    if value.isascii() and value.isdigit():
        return _bounded(int(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a Unix time or ISO date (e.g. 2025-01-31T12:00:00Z)"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return _bounded(number)


def event_ref(value: str) -> str:
    """A row id (digits, within BIGINT) or a Stripe event id."""
    if value.isascii() and value.isdigit():
        _bounded(int(value))
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str, indent=2, sort_keys=True))


def _print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILURE


# ---- process ----


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
        return _fail(f"retry settings: {exc}")
    report = process_pending(
        _engine(),
        policy=policy,
        workers=load_processing_options().workers,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        lease_seconds=args.lease_seconds,
        processor=build_processor(build_notifier()),
    )
    if args.json:
        _print_json(report.as_metadata())
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


# ---- events ----


def _event_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ids": args.id or None,
        "event_type": args.type,
        "since": args.since,
        "until": args.until,
    }


def cmd_events_list(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import list_events

    rows = list_events(_engine(), status=args.status, limit=args.limit, **_event_filters(args))
    if args.json:
        _print_json(rows)
    else:
        _print_table(
            rows,
            ["id", "stripe_event_id", "event_type", "stripe_created", "status", "retry_count"],
        )
    return 0


def cmd_events_replay(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import WorkflowError, replay_events

    try:
        count = replay_events(
            _engine(),
            status=args.status,
            actor=args.actor,
            dry_run=args.dry_run,
            **_event_filters(args),
        )
    except WorkflowError as exc:
        return _fail(str(exc))
    verb = "would re-queue" if args.dry_run else "re-queued"
    print(f"{verb} {count} event(s)")
    return 0


def _add_event_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--id",
        action="append",
        type=event_ref,
        metavar="ID",
        help="row id or Stripe event id (repeatable)",
    )
    parser.add_argument("--type", help="event type, or a family such as 'charge.dispute.*'")
    parser.add_argument("--since", type=_timestamp, help="Stripe created >= (ISO or Unix)")
    parser.add_argument("--until", type=_timestamp, help="Stripe created < (ISO or Unix)")


def add_events_commands(commands: argparse._SubParsersAction) -> None:
    events = commands.add_parser("events", help="inspect and replay stored Stripe events")
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="list stored events, newest first (no payloads)")
    _add_event_filters(ls)
    ls.add_argument("--status", choices=EVENT_STATUSES, help="queue status")
    ls.add_argument("--limit", type=positive_int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_events_list)

    replay = actions.add_parser(
        "replay",
        help="re-queue finished events (processing is idempotent, so this is safe)",
        description="Put processed, ignored or dead-lettered events back to pending. "
        "At least one filter is required; all given filters must match.",
    )
    _add_event_filters(replay)
    replay.add_argument("--status", choices=FINAL_STATUSES, help="only events in this status")
    replay.add_argument("--actor", default=_default_actor(), help="who, for the audit log")
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    replay.set_defaults(func=cmd_events_replay)


# ---- tickets ----


def cmd_tickets_list(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import list_tickets

    status = None if args.status == "all" else (args.status or ("open", "investigating"))
    rows = list_tickets(_engine(), status=status, issue_type=args.issue_type, limit=args.limit)
    if args.json:
        _print_json(rows)
    else:
        _print_table(
            rows, ["id", "status", "priority", "issue_type", "occurrences", "updated_at", "title"]
        )
    return 0


def cmd_tickets_show(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import WorkflowError, show_ticket

    try:
        ticket = show_ticket(_engine(), args.ticket_id)
    except WorkflowError as exc:
        return _fail(str(exc))
    if args.json:
        _print_json(ticket)
        return 0
    for key in ("id", "status", "priority", "issue_type", "title", "stripe_event_id"):
        print(f"{key}: {ticket[key]}")
    for key in ("payment_intent_id", "subscription_id", "customer_id", "resolution"):
        if ticket.get(key):
            print(f"{key}: {ticket[key]}")
    print(f"occurrences: {ticket['occurrences']}  created: {ticket['created_at']}")
    if ticket.get("details"):
        print("details: " + json.dumps(ticket["details"], default=str, sort_keys=True))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(ticket["events_by_status"].items()))
    print(f"events ({counts or 'none'}; newest first):")
    for e in ticket["events"]:
        error = (e.get("error_context") or {}).get("exception", "")
        print(
            f"  {e['id']} {e['stripe_event_id']} {e['event_type']} {e['status']} "
            f"retries={e['retry_count']} {error}".rstrip()
        )
    print("history:")
    for h in ticket["history"]:
        print(f"  {h['occurred_at']} {h['actor']} {h['action']} {h['after']}")
    return 0


def cmd_tickets_resolve(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import WorkflowError, resolve

    try:
        resolve(_engine(), args.ticket_id, args.note, args.actor)
    except WorkflowError as exc:
        return _fail(str(exc))
    print(f"ticket {args.ticket_id} resolved")
    return 0


def cmd_tickets_retry(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import WorkflowError, requeue_ticket_events

    try:
        result = requeue_ticket_events(_engine(), args.ticket_id, args.actor)
    except WorkflowError as exc:
        return _fail(str(exc))
    print(
        f"ticket {result.ticket_id}: re-queued {result.events_requeued} event(s); "
        f"ticket is {result.ticket_status}"
    )
    return 0


def add_tickets_commands(commands: argparse._SubParsersAction) -> None:
    tickets = commands.add_parser("tickets", help="payment support tickets (the support workflow)")
    actions = tickets.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="list tickets, newest first (default: unresolved)")
    ls.add_argument("--status", choices=[*TICKET_STATUSES, "all"])
    ls.add_argument("--issue-type")
    ls.add_argument("--limit", type=positive_int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_tickets_list)

    show = actions.add_parser("show", help="a ticket with its events and history")
    show.add_argument("ticket_id", type=positive_int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_tickets_show)

    res = actions.add_parser("resolve", help="close a ticket with a note (ManualResolution)")
    res.add_argument("ticket_id", type=positive_int)
    res.add_argument("--note", required=True, help="what was done; kept in the audit log")
    res.add_argument("--actor", default=_default_actor(), help="who, for the audit log")
    res.set_defaults(func=cmd_tickets_resolve)

    retry = actions.add_parser(
        "retry", help="re-queue the ticket's dead-lettered events (AutoRetry)"
    )
    retry.add_argument("ticket_id", type=positive_int)
    retry.add_argument("--actor", default=_default_actor(), help="who, for the audit log")
    retry.set_defaults(func=cmd_tickets_retry)


# ---- reconcile ----


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
        return _fail("STRIPE_API_KEY is not set: reconciliation reads the Stripe API")
    engine = _engine()
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
            triggered_by=_default_actor(),
        )
        result = run_reconciliation(engine, api, config)
    except (ValueError, RunInProgress, ReconciliationFailed) as exc:
        return _fail(str(exc))
    if args.json:
        _print_json(result.__dict__)
    else:
        print(f"reconciliation run {result.run_id}: {result.status}")
        _print_json(result.counts)
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
    reconcile.add_argument("--since", type=_timestamp, help="window start (Unix time or ISO)")
    reconcile.add_argument("--until", type=_timestamp, help="window end (Unix time or ISO)")
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


# ---- privacy: erase, retention ----


def cmd_erase(args: argparse.Namespace) -> int:
    from stripe_pipeline.privacy.erase import ErasureError, erase_customer

    try:
        result = erase_customer(
            _engine(), args.customer, actor=args.actor, reason="request", dry_run=args.dry_run
        )
    except ErasureError as exc:
        return _fail(str(exc))
    if args.json:
        _print_json(result.__dict__)
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
        _engine(), load_privacy_options(), actor=args.actor, dry_run=args.dry_run, full=args.full
    )
    summary = result.as_dict()
    if args.json:
        _print_json(summary)
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
    erase.add_argument("--actor", default=_default_actor(), help="who, for the audit log")
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
    retention.add_argument("--actor", default=_default_actor(), help="who, for the records")
    retention.add_argument("--json", action="store_true", help="print the result as JSON")
    retention.set_defaults(func=cmd_retention)
