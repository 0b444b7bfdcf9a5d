"""``stripe-pipeline events``: list stored events and replay finished ones (the
operator's Replay of the error-recovery diagram).
"""

from __future__ import annotations

import argparse
from typing import Any

from stripe_pipeline.commands.common import (
    app_engine,
    default_actor,
    event_ref,
    fail,
    positive_int,
    print_json,
    print_table,
    timestamp,
)
from stripe_pipeline.db.models import EVENT_STATUSES
from stripe_pipeline.db.statuses import FINAL_STATUSES


def _event_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ids": args.id or None,
        "event_type": args.type,
        "since": args.since,
        "until": args.until,
    }


def cmd_events_list(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import list_events

    rows = list_events(app_engine(), status=args.status, limit=args.limit, **_event_filters(args))
    if args.json:
        print_json(rows)
    else:
        print_table(
            rows,
            ["id", "stripe_event_id", "event_type", "stripe_created", "status", "retry_count"],
        )
    return 0


def cmd_events_replay(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import WorkflowError, replay_events

    try:
        count = replay_events(
            app_engine(),
            status=args.status,
            actor=args.actor,
            dry_run=args.dry_run,
            **_event_filters(args),
        )
    except WorkflowError as exc:
        return fail(str(exc))
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
    parser.add_argument("--since", type=timestamp, help="Stripe created >= (ISO or Unix)")
    parser.add_argument("--until", type=timestamp, help="Stripe created < (ISO or Unix)")


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
    replay.add_argument("--actor", default=default_actor(), help="who, for the audit log")
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    replay.set_defaults(func=cmd_events_replay)
