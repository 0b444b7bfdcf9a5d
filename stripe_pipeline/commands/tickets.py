"""``stripe-pipeline tickets``: the support workflow's AutoRetry and ManualResolution
for operators.
"""

from __future__ import annotations

import argparse
import json

from stripe_pipeline.commands.common import (
    app_engine,
    default_actor,
    fail,
    positive_int,
    print_json,
    print_table,
)
from stripe_pipeline.db.models import TICKET_STATUSES


def cmd_tickets_list(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import list_tickets

    status = None if args.status == "all" else (args.status or ("open", "investigating"))
    rows = list_tickets(app_engine(), status=status, issue_type=args.issue_type, limit=args.limit)
    if args.json:
        print_json(rows)
    else:
        print_table(
            rows, ["id", "status", "priority", "issue_type", "occurrences", "updated_at", "title"]
        )
    return 0


def cmd_tickets_show(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import WorkflowError, show_ticket

    try:
        ticket = show_ticket(app_engine(), args.ticket_id)
    except WorkflowError as exc:
        return fail(str(exc))
    if args.json:
        print_json(ticket)
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
        resolve(app_engine(), args.ticket_id, args.note, args.actor)
    except WorkflowError as exc:
        return fail(str(exc))
    print(f"ticket {args.ticket_id} resolved")
    return 0


def cmd_tickets_retry(args: argparse.Namespace) -> int:
    from stripe_pipeline.support.workflow import WorkflowError, requeue_ticket_events

    try:
        result = requeue_ticket_events(app_engine(), args.ticket_id, args.actor)
    except WorkflowError as exc:
        return fail(str(exc))
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
    res.add_argument("--actor", default=default_actor(), help="who, for the audit log")
    res.set_defaults(func=cmd_tickets_resolve)

    retry = actions.add_parser(
        "retry", help="re-queue the ticket's dead-lettered events (AutoRetry)"
    )
    retry.add_argument("ticket_id", type=positive_int)
    retry.add_argument("--actor", default=default_actor(), help="who, for the audit log")
    retry.set_defaults(func=cmd_tickets_retry)
