"""Missed-event backfill: every ``/v1/events`` item in the window that the receiver
never stored goes into ``stripe_events`` with source ``reconciliation``.

Pages of 100 are streamed; each page costs one SELECT for the ids already stored and
one bulk insert of the rest, committed per page: a backfilled event is a true Stripe
fact (deduplicated on its id), so keeping it after a later failure is safe, and the
next run does not have to list it again to recover it. From the queue, it flows
through normal processing (sensor, retries, tickets).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import Connection, select

from stripe_pipeline.db.models import StripeEvent
from stripe_pipeline.db.statuses import EventSource
from stripe_pipeline.land.envelope import MalformedEvent, envelope_from_event
from stripe_pipeline.land.store import insert_events
from stripe_pipeline.privacy.guard import scrub_erased_envelopes
from stripe_pipeline.reconcile.api import ListingApi, list_window
from stripe_pipeline.reconcile.window import Window

EVENTS = StripeEvent.__table__
PAGE = 100


@dataclass(slots=True)
class BackfillResult:
    listed: int = 0
    already_stored: int = 0
    inserted: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "events_listed": self.listed,
            "events_already_stored": self.already_stored,
            "events_backfilled": self.inserted,
            "events_malformed": self.malformed,
        }


def _pages(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while page := list(islice(items, size)):
        yield page


def backfill_events(
    conn: Connection,
    api: ListingApi,
    window: Window,
    *,
    server_filter: bool = True,
    page_size: int = PAGE,
    listed: Iterable[dict[str, Any]] | None = None,
) -> BackfillResult:
    """Insert the window's events missing locally; commits after each page.

    ``listed``: the window's events when the run listed them ahead (``prelist``).
    """
    result = BackfillResult()
    events = (
        iter(listed)
        if listed is not None
        else list_window(api, "events", window.start, window.end, server_filter=server_filter)
    )
    for page in _pages(events, page_size):
        result.listed += len(page)
        envelopes = []
        for doc in page:
            try:
                envelopes.append(envelope_from_event(doc))
            except MalformedEvent:
                result.malformed += 1
        ids = [e.stripe_event_id for e in envelopes]
        stored = set(
            conn.execute(
                select(EVENTS.c.stripe_event_id).where(EVENTS.c.stripe_event_id.in_(ids))
            ).scalars()
        )
        missing = [e for e in envelopes if e.stripe_event_id not in stored]
        missing = scrub_erased_envelopes(conn, missing)  # erased customers stay erased
        # end the reads: the inserts below start with a write, so on SQLite they wait for
        # the lock (the lister saves its progress meanwhile) instead of failing at once
        # on a snapshot another writer made stale
        conn.commit()
        result.already_stored += len(stored)
        if missing:
            result.inserted += insert_events(conn, missing, source=EventSource.RECONCILIATION.value)
            conn.commit()
    return result
