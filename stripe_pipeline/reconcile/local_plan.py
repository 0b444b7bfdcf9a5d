"""Where a run's listings will find their objects, read off the local tables.

Why: reconciliation lists what the tables already hold, nearly all of it (lost or
late webhooks apart). Counting the local rows per created second tells the lister
where to cut each window into slices of about a page before its first call
(``slicing.plan_from_counts``): every slice can start at once and most end after one
page, so no round trip is spent learning how dense the data is, no slice ends the run
paging alone, and a listing costs ~1.04 calls per 100 objects instead of a partial
page per split. Where the counts are wrong (a day the webhooks never delivered) the
slice is paged and split as without a plan; a first backfill, with empty tables,
lists without one.

Only listings of up to ``MAX_PLANNED_ROWS`` local rows are planned: what a plan saves
is a round trip or two at the start and the end of a listing, the same whatever its
size, while counting the rows grows with them. Measured (A/B, same database, runs
alternating): at 50k objects (7.5k-15k rows a listing) runs took 0.4 s less with the
plans; at 100k (25k-30k) the listing 0.7 s less but the run as long, the counts
costing as much before the first call; at 1M (300k) the counts took 2.5 s and the
listing as long (134.5 s and 134.9 s).

A second holding more than a page (a burst: an import, a billing run) is also cut by
the ids of its rows (``local_cuts``), so that its pages are asked for at once rather
than one after another by cursor. Stripe does not say how it orders one second's
objects; the ids are taken in descending order (byte order), a guess that, where it
is wrong, costs calls and never objects (``slicing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import Connection, func, select, true

from stripe_pipeline.catalog.model import Listing, Resource
from stripe_pipeline.reconcile.prelist import PlannedListing, listing_name, prelistable
from stripe_pipeline.reconcile.window import Window
from stripe_pipeline.stripe_api.slicing import PLANNED_FILL, cut_ids, plan_from_counts


def rows_are_listed(resource: Resource, listing: Listing) -> bool:
    """Whether the resource's rows are this listing's objects, one each, under their own
    ``created``: not a carrier's (embedded), not a listing that only refines rows
    another one owns (a PaymentIntent's charges)."""
    return (
        prelistable(listing)
        and listing.created_filter
        and listing.embedded is None
        and listing.owns is None
        and listing.states is None
        and not listing.full
        and listing is resource.listings[0]
    )


# per listing: beyond this many rows (~200 pages, 9 s of one endpoint's budget) the
# listing goes without a plan
MAX_PLANNED_ROWS = 20_000


def local_counts(
    conn: Connection, resource: Resource, window: Window, *, most: int = MAX_PLANNED_ROWS
) -> list[tuple[int, int]]:
    """Local rows per created second in ``window`` (ascending); none when there are
    more than ``most``. Rows marked deleted count too: a canceled
    subscription is one (``status=all`` lists it), and a deleted customer Stripe no
    longer lists only makes its slice a little short of a page, where leaving out one
    that is listed would cost its slice a second call."""
    created = resource.table.c.stripe_created
    in_window = created.between(window.start, window.end)
    total = conn.execute(
        select(func.count()).select_from(resource.table).where(in_window)
    ).scalar_one()
    if total > most:
        return []
    query = select(created, func.count()).where(in_window)
    rows = conn.execute(query.group_by(created).order_by(created))
    return [(int(second), int(n)) for second, n in rows]


def local_cuts(
    conn: Connection, resource: Resource, counts: Sequence[tuple[int, int]]
) -> list[tuple[int, tuple[str, ...]]]:
    """For each second of ``counts`` holding more than a planned slice, ids of its rows
    a slice apart (``slicing.cut_ids``), in the order Stripe is guessed to list them;
    none marked deleted (Stripe may refuse a cursor it no longer lists)."""
    crowded = [second for second, n in counts if n > PLANNED_FILL]
    if not crowded:
        return []
    table = resource.table
    created, key = table.c.stripe_created, table.c[resource.key]
    marker = table.c[resource.deleted_marker] if resource.deleted_marker else None
    live = marker.is_(None) if marker is not None else true()
    order = key.collate("C") if conn.dialect.name == "postgresql" else key
    rows = conn.execute(
        select(created, key, live).where(created.in_(crowded)).order_by(created, order.desc())
    ).all()
    rows_of: dict[int, list[tuple[str, bool]]] = {}
    for second, object_id, usable in rows:
        rows_of.setdefault(int(second), []).append((str(object_id), bool(usable)))
    cuts = []
    for second in sorted(rows_of):
        ids, usable = zip(*rows_of[second], strict=True)
        if found := cut_ids(ids, usable=usable):
            cuts.append((second, found))
    return cuts


def with_local_plans(
    conn: Connection,
    resources: Sequence[Resource],
    planned: Sequence[PlannedListing],
    *,
    most: int = MAX_PLANNED_ROWS,
) -> list[PlannedListing]:
    """``planned`` with each listing whose objects are a table's rows cut where they lie."""
    owners = {
        listing_name(resource, listing): resource
        for resource in resources
        for listing in resource.listings
        if rows_are_listed(resource, listing)
    }
    out = []
    for p in planned:
        resource = owners.get(p.name)
        if resource is None or p.window.start is None:  # a full run's window has no start
            out.append(p)
            continue
        counts = local_counts(conn, resource, p.window, most=most)
        plan = tuple(plan_from_counts(counts))
        cuts = tuple(local_cuts(conn, resource, counts))
        out.append(replace(p, request=replace(p.request, plan=plan, cuts=cuts)) if plan else p)
    return out
