"""Object-level reconciliation: API listings against the local tables, with pandas.

What is compared comes from the catalog: every reconciled column of the resource that
the listed object states (``parse.stated``). Memory stays bounded for any N: API
pages are streamed into chunks (10,000 objects by default); each chunk is compared
with the local rows of those ids only, and its ids are staged in a temporary table.
Local rows the API never listed are found afterwards by an anti-join against that
table over the window, read in chunks too, and each is fetched by id before anything
is reported: a listing hides some objects (a detached card, a deleted customer), and
only a 404 says an object is gone.

Children listed per parent (``Listing.per_parent``: an invoice's lines) are listed
for every parent the run saw or holds from its window, each parent's list complete;
a local child of such a parent that its list no longer holds is gone, as a 404
would say (Stripe has no fetch by id for a line).

A local row changed by an event newer than the chunk's observation time is skipped:
the API answer is older than what we already know, so it is not a discrepancy. An
object with a webhook landed but not yet applied (pending, retrying or being
processed) is skipped too: processing is about to write it, and a run that starts
while a burst is still in the queue would otherwise report every object of the burst
as missing or stale. If the event never applies it ends as a dead letter with its own
ticket, and the next run compares the object again. A row
that equals what its owner's listing states is confirmed (``Spool.confirm``): the run
moves its version to the observation time, as a repair would.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Connection,
    DateTime,
    and_,
    column,
    exists,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy import table as sql_table

from stripe_pipeline.catalog.model import Catalog, Fetch, Listing, Resource, RowWrite, same_value
from stripe_pipeline.db.lists import IN_CHUNK, chunked, in_list
from stripe_pipeline.db.models import StripeEvent
from stripe_pipeline.db.statuses import QUEUED_STATUSES, EventSource
from stripe_pipeline.privacy.guard import scrub_erased
from stripe_pipeline.privacy.personal import PERSONAL_COLUMNS
from stripe_pipeline.reconcile.api import ListingApi, NotFound, list_window
from stripe_pipeline.reconcile.parse import (
    Projection,
    is_deleted_stub,
    project,
    refined_by,
    row_from_api_object,
)
from stripe_pipeline.reconcile.prelist import (
    Prelisted,
    SpoolReader,
    describe,
    list_each,
    listing_name,
)
from stripe_pipeline.reconcile.spool import Finding, Repair, Spool
from stripe_pipeline.reconcile.window import Window, to_unix
from stripe_pipeline.stripe_api.listing import FetchPage, ListingRequest
from stripe_pipeline.stripe_api.slicing import STRIPE_EPOCH

log = logging.getLogger(__name__)

CHUNK = 10_000
SPOOLED_CHUNK = 2_000
SEEN = "reconciliation_seen"
# objects fetched one by one per resource and run (those no listing returned); past
# it, the rest are reported as missing without the fetch
MAX_FETCHES = 2_000
# objects fetched by id at once (they wait on the shared rate limit like any call)
FETCH_THREADS = 16
# answers held at most before they are compared (whole Stripe objects, a few KB each):
# memory as when each resource's fetches were compared before the next resource's
MAX_PENDING_FETCHES = 2_000
# a resource's unseen rows are asked for as its listing reads created ranges whole, in
# batches of at least 1/EARLY_ASKS of its window (each is a query over its table), so
# their fetches overlap the listing instead of trailing it; the rest when it is done
EARLY_ASKS = 16
# Fields whose difference is not staleness: Stripe never changes an object's currency,
# so a mismatch means a corrupted row or a parser bug, which a person must look at.
NOT_STALENESS = frozenset({"currency"})


@dataclass(slots=True)
class CompareStats:
    listed: Counter = field(default_factory=Counter)  # listing -> objects listed
    compared: Counter = field(default_factory=Counter)  # object type -> objects compared
    fetched: Counter = field(default_factory=Counter)  # object type -> fetched by id
    skipped_newer_locally: int = 0
    skipped_in_flight: int = 0  # objects with a landed webhook not yet applied
    unparseable: Counter = field(default_factory=Counter)  # listing -> objects
    found: Counter = field(default_factory=Counter)  # kind -> findings
    repairable_objects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "listed": dict(self.listed),
            "compared": dict(self.compared),
            "fetched": dict(self.fetched),
            "skipped_newer_locally": self.skipped_newer_locally,
            "skipped_in_flight": self.skipped_in_flight,
            "unparseable": dict(self.unparseable),
            "found": dict(self.found),
            "repairable_objects": self.repairable_objects,
        }


def create_seen_table(conn: Connection) -> None:
    """A per-connection temporary table of the ids the API listed in this run."""
    conn.execute(text(f"DROP TABLE IF EXISTS {SEEN}"))
    conn.execute(
        text(
            f"CREATE TEMPORARY TABLE {SEEN} (object_type VARCHAR(64) NOT NULL, "
            "object_id VARCHAR(255) NOT NULL, PRIMARY KEY (object_type, object_id))"
        )
    )


def drop_seen_table(conn: Connection) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {SEEN}"))


def _stage_seen(conn: Connection, object_type: str, keys: list[str]) -> None:
    if not keys:
        return
    if conn.dialect.name == "postgresql":  # one statement per chunk
        conn.execute(
            text(
                f"INSERT INTO {SEEN} SELECT :t, k FROM unnest(CAST(:keys AS text[])) AS k "
                "ON CONFLICT DO NOTHING"
            ),
            {"t": object_type, "keys": keys},
        )
    else:  # SQLite runs in-process: executemany is as good as it gets
        conn.execute(
            text(f"INSERT INTO {SEEN} VALUES (:t, :k) ON CONFLICT DO NOTHING"),
            [{"t": object_type, "k": k} for k in keys],
        )


def analyze_seen(conn: Connection) -> None:
    """Give PostgreSQL's planner the staged row count: temporary tables are never
    auto-analyzed, and without statistics the anti-join may become a nested loop."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {SEEN}"))


def _seen_table():
    return sql_table(SEEN, column("object_type"), column("object_id"))


def seen_ids(conn: Connection, object_type: str, ids: list[str]) -> set[str]:
    """Which of these ids the API listed in this run (for resolving old discrepancies)."""
    seen = _seen_table()
    found: set[str] = set()
    for part in chunked(ids):
        stmt = select(seen.c.object_id).where(
            seen.c.object_type == object_type, in_list(conn, seen.c.object_id, part)
        )
        found.update(conn.execute(stmt).scalars())
    return found


def in_flight_ids(conn: Connection, ids: list[str]) -> set[str]:
    """Which of these objects have a webhook landed that processing has not applied yet.

    Only webhooks: events this run backfilled are pending too, but they are what the
    run found missing, and the discrepancy they close is real.
    """
    events = StripeEvent.__table__
    found: set[str] = set()
    for part in chunked(ids):
        stmt = (
            select(events.c.object_id)
            .where(
                in_list(conn, events.c.object_id, part),
                events.c.status.in_([s.value for s in QUEUED_STATUSES]),
                events.c.source == EventSource.WEBHOOK.value,
            )
            .distinct()
        )
        found.update(conn.execute(stmt).scalars())
    return found


def listed_ids(conn: Connection, object_type: str) -> list[str]:
    """Every id of this object type the API listed (or returned by id) in this run."""
    seen = _seen_table()
    stmt = select(seen.c.object_id).where(seen.c.object_type == object_type)
    return sorted(conn.execute(stmt).scalars())


def local_value(resource: Resource, name: str, value: Any) -> Any:
    """A stored value as the API side is projected: instants as Unix seconds."""
    if value is None:
        return None
    if isinstance(resource.table.c[name].type, DateTime) and isinstance(value, datetime):
        return to_unix(value)
    return value


def _local_rows(conn: Connection, resource: Resource, keys: list[str]) -> pd.DataFrame:
    table = resource.table
    fields = resource.reconciled
    columns = [table.c[resource.key], *(table.c[f] for f in fields), table.c.last_event_created]
    names = ["_key", *fields, "_version"]
    # ``local_value`` of every field, its column types looked up once per chunk
    instants = [f for f in fields if isinstance(table.c[f].type, DateTime)]
    rows: list[Any] = []
    for part in chunked(keys, 10_000 if conn.dialect.name == "postgresql" else IN_CHUNK):
        stmt = select(*columns).where(in_list(conn, table.c[resource.key], part))
        rows.extend(conn.execute(stmt).all())
    # built by column, not row by row (a chunk's rows are thousands), as Python values
    # (object columns: no inference turning an int column with a None into floats)
    data = dict(zip(names, zip(*rows, strict=True) if rows else [()] * len(names), strict=True))
    for f in instants:  # ``local_value``: instants as Unix seconds
        data[f] = tuple(to_unix(v) if isinstance(v, datetime) else v for v in data[f])
    frame = pd.DataFrame({n: data[n] for n in ["_key", "_version", *fields]}, dtype=object)
    return frame.set_index("_key")


def _chunks(
    iterable: Iterable[dict[str, Any]], size: int, observed_at: int | None = None
) -> Iterator[tuple[int, list[dict]]]:
    """Chunks of API objects, each with the time its first page was requested (or
    ``observed_at``: objects listed ahead, before the run's listings began)."""
    iterator = iter(iterable)
    fixed = observed_at
    while True:
        observed_at = int(time.time()) if fixed is None else fixed
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield observed_at, chunk


def _remote_frame(resource: Resource, projections: list[Projection]) -> pd.DataFrame:
    """Remote values (object dtype keeps None and ints as they are) and, per field,
    whether the API object stated it at all."""
    data: dict[str, list[Any]] = {"_key": [p.key for p in projections]}
    for f in resource.reconciled:
        data[f] = [p.values.get(f) for p in projections]
        data[f"_has_{f}"] = [f in p.values for p in projections]
    data["_owns"] = [p.owns_object for p in projections]
    data["_stub"] = [p.deleted_stub for p in projections]
    return pd.DataFrame(data).astype(object).set_index("_key")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a chunk of objects came from: a listing, or fetches by id (no listing)."""

    name: str  # listing name, or "fetch"
    read_as: str
    listing: Listing | None = None


def compare_chunk(
    conn: Connection,
    catalog: Catalog,
    resource: Resource,
    source: Source,
    objects: list[dict[str, Any]],
    observed_at: int,
    spool: Spool,
    stats: CompareStats,
) -> None:
    """Compare one chunk of API objects with the local rows of the same ids."""
    parsed: list[tuple[RowWrite, dict[str, Any]]] = []
    for obj in objects:
        try:
            write = row_from_api_object(
                catalog, resource, source.read_as, obj, observed_at=observed_at
            )
        except (LookupError, TypeError, ValueError) as exc:
            # processing would dead-letter the same payload; a ticket there says why
            stats.unparseable[source.name] += 1
            log.warning("%s %s not comparable: %s", source.name, obj.get("id"), exc)
            continue
        parsed.append((write, obj))
    projected: dict[str, tuple[Projection, dict[str, Any]]] = {}
    for write, obj in _as_stored(conn, resource, parsed):
        p = project(
            resource,
            write,
            refines=refined_by(resource, source.listing, obj),
            deleted_stub=is_deleted_stub(resource, obj),
        )
        if p.key not in projected:  # newest first: keep the first
            projected[p.key] = (p, obj)
    if not projected:
        return
    keys = list(projected)
    # listed already by an earlier listing of this run (a payout's transaction, also
    # listed by window): reported missing once, repaired with this listing's facts too
    again = seen_ids(conn, resource.object_type, keys) if len(resource.listings) > 1 else set()
    _stage_seen(conn, resource.object_type, keys)
    for tag, where in _parent_filters(catalog, resource):
        matching = [k for k, (p, _) in projected.items() if _holds(p.values, where)]
        _stage_seen(conn, tag, matching)
    stats.compared[resource.object_type] += len(keys)

    remote = _remote_frame(resource, [p for p, _ in projected.values()])
    local = _local_rows(conn, resource, keys)
    merged = pd.merge(
        remote, local, how="left", left_index=True, right_index=True, suffixes=("", "_local")
    )
    in_local = merged.index.isin(local.index)
    flight = in_flight_ids(conn, keys)
    in_flight = merged.index.isin(list(flight))
    stats.skipped_in_flight += int(in_flight.sum())

    def repair_of(key: str) -> Repair:
        return Repair(
            resource.object_type, key, source.read_as, observed_at, projected[key][1], source.name
        )

    findings: dict[str, list[Finding]] = {}
    owns = merged["_owns"].astype(bool).to_numpy()
    for key in merged.index[~in_local & owns & ~in_flight]:
        if key in again:
            spool.add([], repair_of(key))
            continue
        findings.setdefault(key, []).append(
            Finding(
                resource.object_type,
                key,
                "missing_locally",
                "",
                None,
                _without_personal(resource, projected[key][0].values),
            )
        )
    for key in merged.index[~in_local & ~owns & ~in_flight]:
        # the owner's listing (earlier in the run) reported the object missing; this
        # listing's facts (a charge's refunds) complete the repaired row after it
        spool.add([], repair_of(key))

    version = pd.to_numeric(merged["_version"], errors="coerce")
    newer_locally = in_local & (version > observed_at).to_numpy()
    stats.skipped_newer_locally += int(newer_locally.sum())
    comparable = in_local & ~newer_locally & ~in_flight
    stub = merged["_stub"].astype(bool).to_numpy()
    for f in resource.reconciled:
        r, loc = merged[f], merged[f"{f}_local"]
        equal = _same_values(r.to_numpy(), loc.to_numpy())
        if f == resource.deleted_marker:  # deleted in Stripe, deleted here: any time agrees
            equal = [e or (s and b is not None) for e, s, b in zip(equal, stub, loc, strict=True)]
        has = merged[f"_has_{f}"].astype(bool).to_numpy()
        anchor = resource.follows.get(f)
        if anchor is not None:  # a fact about the anchor's value: only when they agree
            same_anchor = [
                same_value(projected[k][0].anchors.get(anchor), _plain(v)) if ok else False
                for k, v, ok in zip(merged.index, merged[f"{anchor}_local"], in_local, strict=True)
            ]
            has = has & pd.array(same_anchor, dtype=bool).to_numpy()
        differs = comparable & has & ~pd.array(equal, dtype=bool).to_numpy()
        for key, lv, rv in zip(merged.index[differs], loc[differs], r[differs], strict=True):
            findings.setdefault(key, []).append(
                Finding(
                    resource.object_type,
                    key,
                    "field_mismatch",
                    f,
                    *_shown(resource, f, _plain(lv), _plain(rv)),
                )
            )

    # owned objects Stripe stated exactly as stored: confirmed at the observation time
    stated_equal = merged.index[comparable & owns & ~stub]
    spool.confirm(resource.object_type, [k for k in stated_equal if k not in findings], observed_at)
    for key, items in findings.items():
        for item in items:
            stats.found[item.kind] += 1
        repair = None
        # a currency that was unknown locally is staleness; one that differs is not
        if all(i.field not in NOT_STALENESS or i.local_value is None for i in items):
            stats.repairable_objects += 1
            repair = repair_of(key)
        spool.add(items, repair)


# what a discrepancy shows instead of a personal value (the table is operational data:
# it names the field that differs, never copies an email or a name)
PERSONAL = "[personal]"


def _shown(resource: Resource, name: str, local: Any, remote: Any) -> tuple[Any, Any]:
    if name not in resource.personal:
        return local, remote
    return (None if local is None else PERSONAL), (None if remote is None else PERSONAL)


def _without_personal(resource: Resource, values: dict[str, Any]) -> dict[str, Any]:
    personal = resource.personal
    return {k: (PERSONAL if k in personal and v is not None else v) for k, v in values.items()}


def _as_stored(
    conn: Connection, resource: Resource, parsed: list[tuple[RowWrite, dict[str, Any]]]
) -> list[tuple[RowWrite, dict[str, Any]]]:
    """The rows as they would be stored: an erased customer's personal columns blank,
    whatever Stripe still says (otherwise every night would find them "changed")."""
    if resource.table_name not in PERSONAL_COLUMNS:
        return parsed  # nothing to blank: skip copying every row
    rows = [{**w.values, resource.key: w.key} for w, _ in parsed]
    scrubbed = scrub_erased(conn, resource.table_name, rows)
    if scrubbed is rows:
        return parsed
    return [
        (replace(w, values={c: row[c] for c in w.values}), obj)
        for (w, obj), row in zip(parsed, scrubbed, strict=True)
    ]


def _same_values(remote: np.ndarray, local: np.ndarray) -> np.ndarray:
    """``same_value(_plain(a), _plain(b))`` of each pair (object arrays), which stays
    the definition: pairs equal as Python values are equal by it too, so one
    vectorized ``==`` settles most of them and only the rest are compared one by one."""
    try:
        equal = np.asarray(remote == local, dtype=bool)
    except (TypeError, ValueError):  # a value without a plain truth for ==
        equal = np.zeros(len(remote), dtype=bool)
    if equal.shape != remote.shape:
        equal = np.zeros(len(remote), dtype=bool)
    for i in np.flatnonzero(~equal):
        equal[i] = same_value(_plain(remote[i]), _plain(local[i]))
    return equal


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (pandas may hand back NaN for a missing value)."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:
            return None
        if value.is_integer():
            return int(value)
    if hasattr(value, "item"):
        return value.item()
    return value


@dataclass(frozen=True, slots=True)
class Unlisted:
    """Which of a resource's local rows a run expected its listings to return: those
    created in ``window`` (or, for a per-customer listing, attached to one of
    ``customers``; for a per-parent listing, ``parents`` = ``(column, ids)``, children
    of a listed parent). ``ranges``: only those created in these ``(gte, lte)``
    seconds of the window (ranges the listing has read whole)."""

    window: Window
    customers: list[str] | None = None
    parents: tuple[str, list[str]] | None = None
    ranges: Sequence[tuple[int, int]] = ()


def unseen_local_rows(
    conn: Connection, resource: Resource, unlisted: Unlisted, *, chunk_size: int = CHUNK
) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``unlisted`` no listing returned, deleted rows excepted.

    Read by key in pages, each its own short query: the caller fetches objects and
    commits between pages, which an open cursor would not survive.
    """
    window, customers, parents = unlisted.window, unlisted.customers, unlisted.parents
    table = resource.table
    key_column = table.c[resource.key]
    conditions = []
    scope: tuple[str, list[str]] | None = None
    if customers is not None:
        if not customers:
            return
        conditions.append(table.c.attached.is_(True))
        scope = ("customer_id", customers)
    elif parents is not None:
        if not parents[1]:
            return
        scope = parents
    elif window.start is None:  # full run: every row, also those without a created time
        conditions.append(
            or_(table.c.stripe_created <= window.end, table.c.stripe_created.is_(None))
        )
    else:
        conditions.append(table.c.stripe_created.between(window.start, window.end))
    if unlisted.ranges:
        conditions.append(or_(*(table.c.stripe_created.between(a, b) for a, b in unlisted.ranges)))
    if resource.deleted_marker is not None:
        conditions.append(table.c[resource.deleted_marker].is_(None))
    seen_table = _seen_table()
    analyze_seen(conn)
    conditions.append(
        ~exists(
            select(literal_column("1"))
            .select_from(seen_table)
            .where(
                and_(
                    seen_table.c.object_type == resource.object_type,
                    seen_table.c.object_id == key_column,
                )
            )
        )
    )
    columns = [key_column, *(table.c[f] for f in resource.reconciled)]
    if "status" in table.c and "status" not in resource.reconciled:
        columns.append(table.c.status)
    parts = chunked(scope[1]) if scope is not None else [None]
    for part in parts:
        where = list(conditions)
        if scope is not None and part is not None:
            where.append(in_list(conn, table.c[scope[0]], part))
        after: str | None = None
        while True:
            page_where = [*where, key_column > after] if after is not None else where
            stmt = select(*columns).where(*page_where).order_by(key_column).limit(chunk_size)
            rows = [dict(row._mapping) for row in conn.execute(stmt)]
            if not rows:
                break
            yield rows
            after = rows[-1][resource.key]


class FetchFailed(RuntimeError):
    """A fetch by id failed (past the client's retries); names the object."""


@dataclass(slots=True)
class _Fetching:
    resource: Resource
    key: str
    row: dict[str, Any]
    fetch: Fetch
    local: dict[str, Any]
    answer: Future[tuple[dict[str, Any] | None, int]]


class UnseenFetches:
    """Local rows no listing returned, fetched by id while the run goes on.

    Each is fetched: Stripe's answer is compared, a 404 reported missing (or, for a
    deletable row, repaired as deleted). A resource's fetches start as soon as its
    listings are compared (``submit``), while the run compares the others, and every
    resource's fetches share one pool: one round trip for all of them, not one per
    resource. ``drain`` compares the answers, in the order they were asked for; call it
    before anything that reads what they write (a listing per customer lists the
    customers fetched too) and at the end; it also runs when ``MAX_PENDING_FETCHES``
    answers are held. ``close`` when the run is over. ``asked``: the resources whose
    unseen rows were asked for (once each), all of them; before that, ``submit`` with
    ``ranges`` asks for those created in ranges the listing has read whole (an
    object is fetched once, however many asks find it unseen).
    """

    def __init__(
        self,
        api: ListingApi,
        catalog: Catalog,
        spool: Spool,
        stats: CompareStats,
        *,
        max_fetches: int = MAX_FETCHES,
        threads: int = FETCH_THREADS,
    ) -> None:
        self.api = api
        self.catalog = catalog
        self.spool = spool
        self.stats = stats
        self.max_fetches = max_fetches
        self._budget: Counter = Counter()  # object type -> fetches asked for
        self.asked: set[Resource] = set()
        self._keys: dict[str, set[str]] = {}  # object type -> keys asked for
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fetch-by-id")
        self._pending: list[_Fetching] = []

    def submit(
        self, conn: Connection, resource: Resource, unlisted: Unlisted, *, chunk_size: int = CHUNK
    ) -> None:
        """Ask for the resource's unseen rows (``unseen_local_rows``); past ``max_fetches``
        a row is reported missing without the fetch. Rows of per-parent listings
        (``parents``) need no fetch when Stripe has no fetch by id for them: the run
        read their parents' complete lists, so their absence is Stripe's 404.
        With ``ranges``, only those created there (and the resource is not done)."""
        early = bool(unlisted.ranges)
        if not early:
            self.asked.add(resource)
        keys = self._keys.setdefault(resource.object_type, set())
        for rows in unseen_local_rows(conn, resource, unlisted, chunk_size=chunk_size):
            for row in rows:
                key = row[resource.key]
                if key in keys:  # an earlier ask is fetching it
                    continue
                fetch = resource.fetch_for(key, row)
                fetching = (
                    fetch is not None and self._budget[resource.object_type] < self.max_fetches
                )
                if early:  # an early ask only starts fetches; the last ask reports the rest
                    if not fetching:
                        continue
                    keys.add(key)  # at most max_fetches of them
                local = {f: _plain(local_value(resource, f, row[f])) for f in resource.reconciled}
                if fetch is None and unlisted.parents is not None:
                    _gone(resource, key, row, local, self.spool, self.stats)
                elif not fetching:
                    _missing(resource, key, local, self.spool, self.stats)
                else:
                    if len(self._pending) >= MAX_PENDING_FETCHES:
                        self.drain(conn)
                    self._budget[resource.object_type] += 1
                    self.stats.fetched[resource.object_type] += 1
                    answer = self._pool.submit(self._get, resource, fetch, key, row)
                    self._pending.append(_Fetching(resource, key, row, fetch, local, answer))
            conn.commit()  # release read snapshots between pages

    def _get(
        self, resource: Resource, fetch: Fetch, key: str, row: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, int]:
        try:
            obj = self.api.get(fetch.url(key, row))
            if fetch.embedded is not None:  # fetched through the object that carries it
                obj = _carried(self.catalog, resource, fetch, obj, key)
        except NotFound:
            return None, int(time.time())
        return obj, int(time.time())

    def drain(self, conn: Connection) -> None:
        """Compare every answer asked for so far (waiting for those still in flight)."""
        pending, self._pending = self._pending, []
        groups: dict[tuple[Resource, str], list[dict[str, Any]]] = {}
        observed: dict[tuple[Resource, str], int] = {}
        for item in pending:
            try:
                obj, at = item.answer.result()
            except Exception as exc:  # the run fails on it: say which fetch it was
                raise FetchFailed(
                    f"fetching {item.resource.object_type} {item.key} by id: {describe(exc)}"
                ) from exc
            if obj is None:
                _gone(item.resource, item.key, item.row, item.local, self.spool, self.stats)
                continue
            group = (item.resource, item.fetch.read_as)
            groups.setdefault(group, []).append(obj)
            observed[group] = max(observed.get(group, at), at)
        for (resource, read_as), objects in groups.items():
            source = Source("fetch", read_as)
            for at, chunk in _chunks(objects, SPOOLED_CHUNK, observed[(resource, read_as)]):
                compare_chunk(
                    conn, self.catalog, resource, source, chunk, at, self.spool, self.stats
                )
                conn.commit()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _carried(
    catalog: Catalog, resource: Resource, fetch: Fetch, parent: dict[str, Any], key: str
) -> dict[str, Any]:
    """The object of this key among those its fetched parent carries; its absence
    there is Stripe's word that the object is gone, as a 404 is."""
    for obj in fetch.embedded(parent):  # type: ignore[misc]
        try:
            write = row_from_api_object(catalog, resource, fetch.read_as, obj, observed_at=0)
        except (LookupError, TypeError, ValueError):
            continue
        if write.key == key:
            return obj
    raise NotFound(f"{resource.object_type} {key} is no longer on its parent")


def _gone(
    resource: Resource,
    key: str,
    row: dict[str, Any],
    local: dict[str, Any],
    spool: Spool,
    stats: CompareStats,
) -> None:
    """Stripe no longer has the object: a deletable row is repaired as deleted, any
    other is reported missing."""
    if resource.gone_means_deleted is not None and resource.gone_means_deleted(row):
        spool.add(
            [
                Finding(
                    resource.object_type,
                    key,
                    "deleted_in_stripe",
                    "",
                    _without_personal(resource, local),
                    None,
                )
            ],
            Repair(resource.object_type, key, "", int(time.time()), {}, "deleted"),
        )
        stats.found["deleted_in_stripe"] += 1
        stats.repairable_objects += 1
    else:
        _missing(resource, key, local, spool, stats)


def _missing(
    resource: Resource, key: str, local: dict[str, Any], spool: Spool, stats: CompareStats
) -> None:
    local = _without_personal(resource, local)
    spool.add([Finding(resource.object_type, key, "missing_in_stripe", "", local, None)])
    stats.found["missing_in_stripe"] += 1


def listed_customers(conn: Connection, window: Window) -> list[str]:
    """Customers whose payment methods a run lists: those listed or fetched this run,
    and those with a local, attached payment method created in the window."""
    from stripe_pipeline.db.models import StripePaymentMethod

    seen = _seen_table()
    ids = set(
        conn.execute(select(seen.c.object_id).where(seen.c.object_type == "customer")).scalars()
    )
    methods = StripePaymentMethod.__table__.c
    query = select(methods.customer_id).where(
        methods.customer_id.is_not(None), methods.attached.is_(True)
    )
    if window.start is not None:
        query = query.where(
            or_(
                methods.stripe_created.between(window.start, window.end),
                methods.stripe_created.is_(None),
            )
        )
    ids.update(conn.execute(query.distinct()).scalars())
    return sorted(ids)


def _filter_tag(listing: Listing) -> str:
    """The seen-table type under which a run stages the parents ``listing`` lists."""
    return f"{listing.per_parent.parent}?{listing.name}"  # type: ignore[union-attr]


def _parent_filters(catalog: Catalog, resource: Resource) -> list[tuple[str, Mapping[str, Any]]]:
    """(tag, values) of each per-parent listing that lists children of only some of
    ``resource``'s objects (``PerParent.where``)."""
    return [
        (_filter_tag(listing), listing.per_parent.where)
        for _, listing in catalog.listings.values()
        if listing.per_parent is not None
        and listing.per_parent.where
        and listing.per_parent.parent == resource.object_type
    ]


def _holds(values: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    return all(values.get(name) == value for name, value in where.items())


def listed_parents(
    conn: Connection, catalog: Catalog, listing: Listing, window: Window
) -> list[str]:
    """Parents whose children a per-parent listing lists: those listed or fetched this
    run, and the local ones created in the window (every local one on a full run).

    With ``PerParent.where``, only parents holding those values: as Stripe stated them
    this run (an automatic payout it has just reconciled), else as stored.
    """
    spec = listing.per_parent
    assert spec is not None
    listed = set(listed_ids(conn, spec.parent))
    parent = catalog.by_type[spec.parent]
    table = parent.table
    query = select(table.c[parent.key])
    if window.start is not None:
        query = query.where(table.c.stripe_created.between(window.start, window.end))
    if not spec.where:
        return sorted(listed | set(conn.execute(query).scalars()))
    query = query.where(*(table.c[name] == value for name, value in spec.where.items()))
    local = set(conn.execute(query).scalars()) - listed
    return sorted(set(listed_ids(conn, _filter_tag(listing))) | local)


def leading_prelisted(resource: Resource, prelisted: Prelisted) -> list[Listing]:
    """The listings of ``resource`` that can be compared before the rest of the run:
    prelisted, and before any listing that is not (a resource's listings keep their
    order: its owner's listing first)."""
    leading = []
    for listing in resource.listings:
        if not prelisted.has(listing_name(resource, listing)):
            break
        leading.append(listing)
    return leading


def compare_prelisted(
    conn: Connection,
    catalog: Catalog,
    resources: Sequence[Resource],
    prelisted: Prelisted,
    spool: Spool,
    stats: CompareStats,
    *,
    chunk_size: int = SPOOLED_CHUNK,
    after_chunk: Callable[[Connection], None] | None = None,
    listed: Callable[[Connection, Resource], None] | None = None,
    covered: Callable[[Connection, Resource, list[tuple[int, int]]], None] | None = None,
) -> set[str]:
    """Compare the listings read ahead as their objects arrive, taking each chunk from
    the listing with the most waiting: the listings run in parallel and finish about
    together, so comparing them in the catalog's order would wait on the first while
    the others pile up. Returns the listings compared (``listing_name``).

    Only what does not depend on the order: each resource's leading prelisted
    listings (``leading_prelisted``), one chunk at a time, so a resource's listings
    are still compared in their order. Listings per customer or per parent, and the
    local rows no listing returned, follow in the catalog's order (``compare_resource``).
    ``after_chunk(conn)`` runs after each chunk is committed (the run writes its
    confirmations there); ``listed(conn, resource)`` once every listing of a resource
    is compared, while the others are still listed (the run asks for its unseen rows
    there, so their fetches overlap the listing); before that, ``covered(conn,
    resource, ranges)`` with created ranges its listings have read whole
    (``_ReadWhole``), so that the fetches of the rows created there start while the
    rest of the window is listed.
    """
    queue: dict[Resource, list[Listing]] = {}
    for resource in resources:
        leading = leading_prelisted(resource, prelisted)
        if leading:
            queue[resource] = leading
    readers = {
        resource: prelisted.reader(listing_name(resource, listings[0]))
        for resource, listings in queue.items()
    }
    read_whole = {
        resource: _ReadWhole(prelisted.windows[listing_name(resource, listings[0])])
        for resource, listings in queue.items()
        if covered is not None and _ranges_decide_unseen(resource, listings)
    }

    def ask_covered(resource: Resource, reader: SpoolReader) -> None:
        tracker = read_whole.get(resource)
        if tracker is None or len(queue[resource]) != 1:  # an earlier listing is not read
            return
        ranges = tracker.take(reader.covered())
        if ranges:
            covered(conn, resource, ranges)  # type: ignore[misc]

    compared: set[str] = set()
    try:
        while readers:
            for resource, reader in list(readers.items()):
                if reader.exhausted():  # this listing is done: the resource's next one
                    reader.close()
                    compared.add(reader.name)
                    queue[resource].pop(0)
                    del readers[resource]
                    if queue[resource]:
                        readers[resource] = prelisted.reader(
                            listing_name(resource, queue[resource][0])
                        )
                    elif listed is not None and all(
                        listing_name(resource, listing) in compared for listing in resource.listings
                    ):
                        listed(conn, resource)
            if not readers:
                break
            resource, reader = max(readers.items(), key=lambda item: item[1].ready())
            if not reader.ready():
                for waiting, its_reader in readers.items():
                    ask_covered(waiting, its_reader)
                prelisted.wait_for_any(readers.values(), timeout=1.0)
                continue
            listing = queue[resource][0]
            objects = list(_as_listed(reader.take(chunk_size), listing, stats))
            if objects:
                source = Source(listing.name, listing.read_as, listing)
                compare_chunk(
                    conn, catalog, resource, source, objects, prelisted.observed_at, spool, stats
                )
                conn.commit()  # release read snapshots; the temp table survives commits
                if after_chunk is not None:
                    after_chunk(conn)
            ask_covered(resource, reader)
    finally:
        for reader in readers.values():
            reader.close()
    return compared


def _ranges_decide_unseen(resource: Resource, prelisted_listings: Sequence[Listing]) -> bool:
    """Whether a created range its listings read whole settles which of the resource's
    rows created there were not listed: every listing prelisted, windowed on the
    objects' own ``created`` (not on a carrier's)."""
    return list(prelisted_listings) == list(resource.listings) and all(
        listing.created_filter and listing.embedded is None for listing in resource.listings
    )


class _ReadWhole:
    """The created ranges a listing has read whole, handed out in batches that span at
    least ``1/EARLY_ASKS`` of its window: each batch is one query for unseen rows."""

    def __init__(self, window: Window) -> None:
        start = STRIPE_EPOCH if window.start is None else window.start
        self.step = max(1, (window.end - start + 1) // EARLY_ASKS)
        self.taken = 0  # ranges handed out so far (the reader reports them in order)

    def take(self, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
        fresh = covered[self.taken :]
        if not fresh or sum(b - a + 1 for a, b in fresh) < self.step:
            return []
        self.taken = len(covered)
        return merge_ranges(fresh)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ``(gte, lte)`` ranges, overlapping or adjacent ones joined."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def compare_resource(
    conn: Connection,
    api: ListingApi,
    catalog: Catalog,
    resource: Resource,
    window: Window,
    spool: Spool,
    stats: CompareStats,
    fetches: UnseenFetches,
    *,
    server_filter: bool = True,
    chunk_size: int = CHUNK,
    prelisted: Prelisted | None = None,
    compared: Collection[str] = (),
) -> None:
    """Every listing of one resource, then the local rows no listing returned (asked
    of ``fetches``, whose answers the caller drains).

    ``compared``: listings (``listing_name``) that ``compare_prelisted`` compared already
    (its unseen rows may have been asked for then: ``fetches.asked``).

    A resource whose listings are all ``full`` is compared whole, whatever the window.
    A listing of carried objects (``Listing.embedded``) is windowed on the carriers.
    A listing in ``prelisted`` is read from its spool file (listed ahead, in parallel);
    with ``prelisted``, per-customer and per-parent listings run many at once as well.
    """
    pages = getattr(api, "list_page", None) if prelisted is not None else None
    window = resource_window(resource, window)
    customers: list[str] | None = None
    children: tuple[str, list[str]] | None = None
    for listing in resource.listings:
        if listing_name(resource, listing) in compared:
            continue
        source = Source(listing.name, listing.read_as, listing)
        observed_at: int | None = None
        if prelisted is not None and prelisted.has(listing_name(resource, listing)):
            objects: Iterable[dict[str, Any]] = prelisted.objects(listing_name(resource, listing))
            observed_at = prelisted.observed_at
        elif listing.per_customer:
            fetches.drain(conn)  # the customers fetched by id are listed too
            customers = listed_customers(conn, window)
            objects = _per_customer(api, listing, customers, pages)
        elif listing.per_parent is not None:
            fetches.drain(conn)  # the parents fetched by id are listed too
            parents = listed_parents(conn, catalog, listing, window)
            children = (listing.per_parent.column, parents)
            objects = _per_parent(api, listing, parents, pages)
        else:
            objects = list_window(
                api,
                listing.path,
                window.start,
                window.end,
                server_filter=server_filter and listing.created_filter,
                params=dict(listing.params),
            )
        objects = _as_listed(objects, listing, stats)
        # objects read back from a spool are whole Stripe objects (several KB as dicts):
        # smaller chunks keep memory flat, at a few more queries
        size = min(chunk_size, SPOOLED_CHUNK) if observed_at is not None else chunk_size
        for chunk_time, chunk in _chunks(objects, size, observed_at):
            compare_chunk(conn, catalog, resource, source, chunk, chunk_time, spool, stats)
            conn.commit()  # release read snapshots; the temp table survives commits
    if resource in fetches.asked:
        return
    if any(listing.per_parent is None for listing in resource.listings):
        # a windowed listing states the resource too (balance transactions, also
        # listed per payout): unseen rows are those of the window, each fetched by id
        children = None
    fetches.submit(conn, resource, Unlisted(window, customers, children), chunk_size=chunk_size)


def resource_window(resource: Resource, window: Window) -> Window:
    """The window a resource is compared over: whole when its listings are all ``full``."""
    if resource.listings and all(listing.full for listing in resource.listings):
        return Window(None, window.end)
    return window


def _per_customer(
    api: ListingApi, listing: Listing, customers: list[str], pages: FetchPage | None = None
) -> Iterator[dict[str, Any]]:
    """Each customer's objects. A deleted customer's list answers 404: nothing is listed
    for it, and its local rows are fetched by id like any other row no listing returned.
    With ``pages`` (``StripeApi.list_page``), many customers are listed at once."""
    if pages is not None:
        requests = (
            ListingRequest(
                listing.path, params={**listing.params, "customer": c}, created_filter=False, key=c
            )
            for c in customers
        )
        for _customer, obj in list_each(pages, requests):
            yield obj
        return
    for customer in customers:
        try:
            yield from api.list_all(listing.path, params={**listing.params, "customer": customer})
        except NotFound:
            log.info("%s of customer %s: Stripe knows no such customer", listing.name, customer)


def _carried_by(parents: Iterable[dict[str, Any]], listing: Listing) -> Iterator[dict[str, Any]]:
    for parent in parents:
        yield from listing.embedded(parent)  # type: ignore[misc]


def _per_parent(
    api: ListingApi, listing: Listing, parents: list[str], pages: FetchPage | None = None
) -> Iterator[dict[str, Any]]:
    """Every child of each parent (all pages), each naming in ``per_parent.field`` the
    parent it was listed under; a parent Stripe answers 404 for (a deleted draft) has
    none. With ``pages`` (``StripeApi.list_page``), many parents are listed at once."""
    spec = listing.per_parent
    assert spec is not None

    def params_of(parent: str) -> dict[str, Any]:  # a parent named in the path or the query
        return {**listing.params, spec.param: parent} if spec.param else dict(listing.params)

    if pages is not None:
        requests = (
            ListingRequest(
                listing.path.replace("{id}", p),
                params=params_of(p),
                created_filter=False,
                key=p,
            )
            for p in parents
        )
        for parent, child in list_each(pages, requests):
            yield {**child, spec.field: parent}
        return
    for parent in parents:
        path = listing.path.replace("{id}", parent)
        params = params_of(parent)
        try:
            for child in api.list_all(path, params=params or None):
                yield {**child, spec.field: parent}
        except NotFound:
            continue


def _as_listed(
    objects: Iterable[dict[str, Any]], listing: Listing, stats: CompareStats
) -> Iterator[dict[str, Any]]:
    """A listing's objects as compared: carried ones taken out of their carriers,
    counted, and only those the listing states (``Listing.states``)."""
    if listing.embedded is not None:
        objects = _carried_by(objects, listing)
    if listing.states is not None:
        return (o for o in _counting(objects, stats, listing.name) if listing.states(o))
    return _counting(objects, stats, listing.name)


def _counting(items: Iterable[dict[str, Any]], stats: CompareStats, name: str):
    for item in items:
        stats.listed[name] += 1
        yield item


def refresh_stale(
    conn: Connection,
    api: ListingApi,
    catalog: Catalog,
    object_types: Iterable[str],
    spool: Spool,
    stats: CompareStats,
    *,
    limit: int = MAX_FETCHES,
) -> list[tuple[str, str]]:
    """Fetch the objects processing left as a guess (``stale_objects``) and compare them.

    Returns the (object type, id) entries handled, to forget when the run commits.
    """
    from stripe_pipeline.db.models import StaleObject

    s = StaleObject.__table__.c
    rows = conn.execute(
        select(s.object_type, s.object_id)
        .where(s.object_type.in_(list(object_types)))
        .order_by(s.queued_at, s.id)
        .limit(limit)
    ).all()
    conn.commit()
    handled: list[tuple[str, str]] = []
    by_type: dict[str, list[str]] = {}
    for object_type, object_id in rows:
        by_type.setdefault(object_type, []).append(object_id)
    for object_type, ids in by_type.items():
        resource = catalog.by_type[object_type]
        fetched: dict[str, list[dict[str, Any]]] = {}
        for object_id in ids:
            fetch = resource.fetch_for(object_id)
            handled.append((object_type, object_id))
            if fetch is None:
                continue
            stats.fetched[object_type] += 1
            try:
                obj = api.get(fetch.path.replace("{id}", object_id))
            except NotFound:
                continue  # the run's own comparison reports a vanished object
            fetched.setdefault(fetch.read_as, []).append(obj)
        observed_at = int(time.time())
        for read_as, objects in fetched.items():
            compare_chunk(
                conn,
                catalog,
                resource,
                Source("fetch", read_as),
                objects,
                observed_at,
                spool,
                stats,
            )
        conn.commit()
    return handled
