"""Parallel listing of Stripe list endpoints by time slices, resumable, in bounded memory.

Why: a list call takes a few hundred milliseconds and returns 100 objects, so paging one
endpoint with ``starting_after`` moves ~300 objects/s while the account allows 100
calls/s (25 per endpoint). ``SlicedLister`` keeps many pages in flight: each listing's
``created`` window is cut into slices where the data is dense (``slicing.py`` plans,
this module does the I/O), many listings run at once, and every call goes through the
caller's ``fetch_page`` (``StripeApi.list_page``: the shared rate limit, 429s, audit).

Guarantees:

- Each object of a listing's window is yielded once (slices are disjoint and cover the
  window). The order of objects is **not** defined: results are keyed (each carries its
  listing's key and its own id), so consumers must not rely on order.
- Memory: a slice has at most one page in flight (queued, fetching, or waiting for the
  consumer); slices are bounded per listing and in total, and listings are admitted
  lazily from the caller's iterable, so a slow consumer holds back the fetchers
  (backpressure) and nothing queues without bound.
- A page that fails is retried alone (``max_attempts``, exponential backoff); other
  slices go on. A slice that still fails ends the listing with ``ListingFailed``.
- With a ``progress`` store and a ``run_key``, each consumed page is recorded (its
  slice's new cursor and bounds, or that it is done, and any slice split off it), so a
  run that dies resumes where the consumer was: completed slices are not listed
  again, unfinished ones continue from their last recorded cursor. Records are written
  every ``checkpoint_seconds`` (objects of pages consumed since may be listed again
  after a crash), or at once, in the caller's transaction, by ``checkpoint(conn)``:
  writing your results and the progress in one transaction makes a resumed run list
  each object exactly once.
- A crowded second cut by ids (``ListingRequest.cuts``) is listed by one slice per cut
  at once. Cuts that do not hold cost calls, not objects: the objects two slices both
  list go out once (the ids are kept for the run), and a slice whose cut Stripe
  refuses lists the second again from its top. Those ids are not recorded, so a run
  resumed after such a refusal may list an object of that second twice.

Usage::

    lister = SlicedLister(api.list_page, progress=DatabaseListingProgress(engine),
                          run_key="backfill-2026-11-27")
    for key, obj in lister.list_many([
        ListingRequest.resource("charges", start, end),
        ListingRequest.resource("subscriptions", start, end, params={"status": "all"}),
    ]):
        ...
    print(lister.stats.as_dict())
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any, Protocol

import stripe
from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.db.models import StripeListingSlice
from stripe_pipeline.stripe_api.client import resource_path
from stripe_pipeline.stripe_api.slicing import (
    PAGE_SIZE,
    InconsistentPage,
    Slice,
    after_page,
    expected_objects,
    first_slice,
    page_params,
    planned_slices,
    stop_at,
)

log = logging.getLogger(__name__)

_SLICES = StripeListingSlice.__table__
MAX_KEY = 500
# slices kept per request/s of budget: the latency seen, with this margin for calls
# slower than the fastest (see SlicedLister)
LATENCY_MARGIN = 1.25
FetchPage = Callable[[str, dict[str, Any]], Mapping[str, Any]]


# --- what to list ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListingRequest:
    """One list endpoint over one ``created`` window, with its own parameters.

    ``params`` pass through to every page (``status=all``, ``expand``, ``type``...).
    ``created_filter=False`` is for endpoints without one (per-customer sub-listings
    such as ``/v1/customers/{id}/payment_methods``): paged with the cursor alone.
    ``key`` names the listing in results and in the progress store; the default is
    the path, the parameters and the window, so the same request resumes the same run.
    ``plan``: where the caller knows its objects lie, ``(first second, objects)`` runs of
    about a page (``slicing.plan_from_counts``): the window starts cut there instead of
    as one slice. It is a hint, not part of the key: a resumed run goes on from what
    was recorded.
    ``cuts``: for crowded seconds of the plan, ``(second, ids)`` about a page apart in
    the order Stripe is expected to list them (``slicing.cut_ids``): that second is
    listed by as many slices at once, by cursor. A hint too: wrong ids cost calls,
    never objects.
    """

    path: str
    start: int | None = None
    end: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    created_filter: bool = True
    key: str = ""
    plan: tuple[tuple[int, int], ...] = ()
    cuts: tuple[tuple[int, tuple[str, ...]], ...] = ()

    @classmethod
    def resource(
        cls,
        name: str,
        start: int | None,
        end: int | None,
        *,
        params: Mapping[str, Any] | None = None,
        key: str = "",
        plan: Sequence[tuple[int, int]] = (),
        cuts: Sequence[tuple[int, Sequence[str]]] = (),
    ) -> ListingRequest:
        """A top-level resource by name (``charges``, ``subscriptions``...)."""
        return cls(
            resource_path(name),
            start,
            end,
            dict(params or {}),
            key=key,
            plan=tuple(plan),
            cuts=tuple((int(second), tuple(ids)) for second, ids in cuts),
        )

    @property
    def listing_key(self) -> str:
        if self.key:
            return self.key
        params = "&".join(f"{k}={self.params[k]}" for k in sorted(self.params))
        window = f" created[{self.start},{self.end}]" if self.created_filter else ""
        key = f"{self.path}?{params}{window}" if params else f"{self.path}{window}"
        if len(key) > MAX_KEY:  # the progress table's column: keep it readable and unique
            key = f"{key[: MAX_KEY - 17]}#{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        return key


@dataclass(slots=True)
class ListedPage:
    """One page as the consumer receives it."""

    key: str  # the listing's key
    objects: list[dict[str, Any]]
    slice_no: int
    final: bool  # the last page of its slice
    # the last page of its listing in this run: every slice of it is done (a listing
    # that a resumed run found complete yields no page at all)
    listing_done: bool = False
    # on a slice's last page, the created seconds ``(gte, lte)`` it listed whole: with
    # the pages before it, every object of the listing created in that range is out
    # (None otherwise, and for listings without a created filter)
    covered: tuple[int, int] | None = None


@dataclass
class ListingStats:
    """Counts of one lister (all its ``pages()`` calls), for run metadata and benchmarks."""

    calls: int = 0  # page requests made, failed ones included
    pages: int = 0
    objects: int = 0
    listings: int = 0
    slices: int = 0  # slices listed (initial, split off, or resumed)
    splits: int = 0
    retries: int = 0  # pages requested again after a failure
    resumed_slices: int = 0  # unfinished slices taken over from an earlier run
    skipped_slices: int = 0  # completed in an earlier run: not listed again

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ListingFailed(RuntimeError):
    """A slice still failed after its retries; ``__cause__`` is the last error."""

    def __init__(self, key: str, s: Slice, attempts: int) -> None:
        super().__init__(f"listing {key!r} failed at slice {s} after {attempts} attempt(s)")
        self.key = key
        self.slice = s


def default_retryable(exc: BaseException) -> bool:
    """Transient: connection trouble, 429s and 5xx left over by the client's own retries."""
    if isinstance(exc, stripe.StripeError):
        return (
            isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError))
            or (exc.http_status or 500) >= 500
        )
    return isinstance(exc, (ConnectionError, TimeoutError))


# --- progress ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """A slice's state as the progress store keeps it."""

    listing: str
    slice_no: int
    gte: int | None
    lte: int | None
    cursor: str | None
    done: bool
    objects: int = 0
    pages: int = 0
    stops: tuple[str, ...] = ()

    @property
    def slice(self) -> Slice:
        return Slice(self.gte, self.lte, self.cursor, self.stops)


class ListingProgress(Protocol):
    """Where a run's slices are kept so that a later run with the same key resumes it."""

    def load(self, run_key: str, listing: str) -> list[SliceRecord]: ...

    def save(self, run_key: str, records: Sequence[SliceRecord], conn: Any = None) -> None: ...

    def forget(self, run_key: str) -> None: ...


class MemoryListingProgress:
    """Progress kept in this process (tests, or a caller that only wants retries)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, int], SliceRecord] = {}
        self._lock = threading.Lock()

    def load(self, run_key: str, listing: str) -> list[SliceRecord]:
        with self._lock:
            return sorted(
                (r for (k, lk, _), r in self._rows.items() if k == run_key and lk == listing),
                key=lambda r: r.slice_no,
            )

    def save(self, run_key: str, records: Sequence[SliceRecord], conn: Any = None) -> None:
        with self._lock:
            for r in records:
                self._rows[(run_key, r.listing, r.slice_no)] = r

    def forget(self, run_key: str) -> None:
        with self._lock:
            for k in [k for k in self._rows if k[0] == run_key]:
                del self._rows[k]


class DatabaseListingProgress:
    """Progress in the app database (``stripe_listing_slices``), on SQLite or PostgreSQL.

    ``forget(run_key)`` once the run's results are committed: the rows only serve a
    resume.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, run_key: str, listing: str) -> list[SliceRecord]:
        t = _SLICES
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.c.slice_no,
                    t.c.gte,
                    t.c.lte,
                    t.c.cursor,
                    t.c.done,
                    t.c.objects,
                    t.c.pages,
                    t.c.stops,
                )
                .where(t.c.run_key == run_key, t.c.listing == listing)
                .order_by(t.c.slice_no)
            ).all()
        return [
            SliceRecord(listing, *row[:-1], stops=tuple(row.stops.split(",")) if row.stops else ())
            for row in rows
        ]

    def save(self, run_key: str, records: Sequence[SliceRecord], conn: Any = None) -> None:
        if not records:
            return
        if conn is None:
            with self.engine.begin() as own:
                self._upsert(own, run_key, records)
        else:
            self._upsert(conn, run_key, records)

    def _upsert(self, conn: Connection, run_key: str, records: Sequence[SliceRecord]) -> None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(_SLICES)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_key", "listing", "slice_no"],
            set_={
                c: stmt.excluded[c]
                for c in ("gte", "lte", "cursor", "done", "objects", "pages", "stops")
            }
            | {"updated_at": func.now()},
        )
        rows = [
            {"run_key": run_key, **asdict(r), "stops": ",".join(r.stops) or None} for r in records
        ]
        conn.execute(stmt, rows)

    def forget(self, run_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(_SLICES).where(_SLICES.c.run_key == run_key))


# --- the engine ---------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Listing:
    request: ListingRequest
    key: str
    next_no: int = 0
    credits: int = 0  # slices it may still split off (see SlicedLister)
    live: int = 0  # slices not done
    latency: float = math.inf  # its fastest call so far, in seconds
    unknown: int = 0  # live slices not paged into yet (their size is unknown)
    known: float = 0.0  # objects expected in the others
    # planned slices not started yet, the next one last (see SlicedLister._start_planned)
    pending: list[_Task] = field(default_factory=list)
    planned: float = 0.0  # objects expected in them
    # crowded seconds listed by cursor (``Slice.stops``): their slices not done, the
    # ids they listed (a cut that does not hold may list some twice; they go out once),
    # those listed whole from the top after a refused cut, and those said covered
    crowded: dict[int, int] = field(default_factory=dict)
    crowded_ids: set[str] = field(default_factory=set)
    relisted: dict[int, int] = field(default_factory=dict)  # second -> its slice_no
    whole: set[int] = field(default_factory=set)

    def count(self, task: _Task, sign: int) -> None:
        if math.isinf(task.estimate):
            self.unknown += sign
        else:
            self.known += sign * task.estimate

    @property
    def remaining(self) -> float:
        """Objects expected still to list (infinite while a slice is unknown)."""
        return math.inf if self.unknown else self.known + self.planned


@dataclass(slots=True)
class _Task:
    listing: _Listing
    slice_no: int
    slice: Slice
    objects: int = 0
    pages: int = 0
    estimate: float = math.inf  # objects expected still in the slice (unknown: first)
    # the newest second this slice has listed since this run took it: splits cut off
    # older parts and paging lowers its ``lte``, so done, it covered ``[gte, top]``
    top: int | None = None
    crowded: int | None = None  # the crowded second it lists part of (see _Listing)

    def __post_init__(self) -> None:
        if self.top is None:
            self.top = self.slice.lte


_STOP = object()


class _WorkQueue:
    """Slices waiting for a worker, the largest expected rest first.

    Longest-first keeps the big listings busy from the start, so that they do not
    finish alone at the end, paced by their own endpoint's limit.
    """

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[float, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()

    def put(self, task: _Task) -> None:
        self._queue.put((-task.estimate, next(self._order), task))

    def stop(self, workers: int) -> None:
        for _ in range(workers):
            self._queue.put((-math.inf, next(self._order), _STOP))

    def get(self) -> Any:
        return self._queue.get()[2]


class _Run:
    """One ``pages()`` call: the workers, the queues and the live slices it counts."""

    def __init__(self, lister: SlicedLister) -> None:
        self.work = _WorkQueue()
        self.results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.active: set[_Listing] = set()  # listings with slices left
        self.live = 0  # slices not done, all listings
        self.outstanding = 0  # tasks queued or being fetched
        self.threads = [
            threading.Thread(target=lister._worker, args=(self.work, self.results), daemon=True)
            for _ in range(lister.workers)
        ]
        for t in self.threads:
            t.start()

    def submit(self, task: _Task, *, new: bool) -> None:
        """Queue a slice's next page; ``new`` when the slice was not live before."""
        task.listing.count(task, +1)
        if new:
            task.listing.live += 1
            self.live += 1
            self.active.add(task.listing)
        self.work.put(task)
        self.outstanding += 1

    def done(self, task: _Task) -> None:
        task.listing.live -= 1
        self.live -= 1
        if task.listing.live == 0:
            self.active.discard(task.listing)

    def next_result(self) -> tuple[_Task, Mapping[str, Any] | None, BaseException | None]:
        result = self.results.get()
        self.outstanding -= 1
        return result

    def stop(self) -> None:
        self.work.stop(len(self.threads))


class SlicedLister:
    """Lists many endpoints at once, each by time slices; see the module docstring.

    Splitting: a listing holds about its share of ``workers`` slices, in proportion to
    the objects it is expected to have left, at most ``max_slices_per_listing``. A
    page may split its slice's rest in several parts (a dense burst reaches its share
    at once) but every new slice spends a credit, and a listing earns one credit per
    full page (plus ``start_credits`` to start with). So the slices of a listing of
    ``N`` objects number at most ``floor(N / 100) + start_credits + 1`` and its calls at
    most ``2 * floor(N / 100) + start_credits + 1``, whatever the distribution of
    creation times (a burst of 500 objects in one second, however dense it looks,
    can waste no more calls than it has pages). The starting allowance lets the first
    page cut a large listing in up to 9 parts: one round trip to full speed instead of
    three (measured at 10k-20k objects: 5-15 % less wall time, calls within 3 %).

    ``fetch_page(path, params) -> page dict`` does one rate-limited call
    (``StripeApi.list_page``, or an in-process fake in tests). ``workers`` threads
    fetch; a listing is cut into at most ``max_slices_per_listing`` live slices, all
    listings together into at most ``max_live_slices``.

    With ``rates`` (the account's and an endpoint's requests/s, as the client's limiter
    paces them) the slices follow the API's latency instead (Little's law): pages in
    flight = rate x latency, so an endpoint keeps ``endpoint rate x latency x
    LATENCY_MARGIN`` slices busy and all listings together the account's share, with
    ``workers`` and ``max_slices_per_listing`` as the ceilings. A listing's latency is
    its fastest call so far (its first page goes out before the limit queues anyone;
    waiting calls only make it look slower, which errs towards more slices).
    At 300 ms that is ~11 slices per listing (25/s) and ~40 in all (100/s); at 700 ms
    ~23 and ~90: a fixed 12 held one run to half the budget there, and slices beyond
    what the limit lets through only add a partial page each.

    A request with a ``plan`` starts from the planned slices instead of one: all are
    recorded at once (for a resume), and they are started as the listing has room
    (``start_credits + 1`` at first, then as above), without spending credits. Measured
    at 10k-20k objects (reconciliation, where the local table is the plan): calls
    1.12-1.2x the minimum down to 1.04-1.08x; A/B at 10k 3.6 s a run down to 3.1 s.
    """

    def __init__(
        self,
        fetch_page: FetchPage,
        *,
        workers: int = 40,
        max_slices_per_listing: int = 12,
        max_live_slices: int | None = None,
        min_split_objects: int = 200,
        start_credits: int = 8,
        max_attempts: int = 5,
        backoff_seconds: float = 0.5,
        backoff_cap_seconds: float = 15.0,
        retryable: Callable[[BaseException], bool] = default_retryable,
        progress: ListingProgress | None = None,
        run_key: str | None = None,
        checkpoint_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        rates: tuple[float, float] | None = None,
    ) -> None:
        if (progress is None) != (run_key is None):
            raise ValueError("progress and run_key go together")
        if workers < 1 or max_slices_per_listing < 1 or max_attempts < 1:
            raise ValueError("workers, max_slices_per_listing and max_attempts must be >= 1")
        self.fetch_page = fetch_page
        self.workers = workers
        self.max_slices_per_listing = max_slices_per_listing
        self.max_live_slices = max_live_slices or 2 * workers
        self.min_split_objects = min_split_objects
        self.start_credits = start_credits
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self.retryable = retryable
        self.progress = progress
        self.run_key = run_key
        self.checkpoint_seconds = checkpoint_seconds
        self._sleep = sleep
        self.rates = (float(rates[0]), float(rates[1])) if rates else None  # JSON: a list
        self.stats = ListingStats()
        self._stats_lock = threading.Lock()
        self._unsaved: list[SliceRecord] = []  # consumed pages not yet written
        self._current: list[SliceRecord] = []  # the page the consumer holds now
        self._last_save = time.monotonic()

    # --- public iteration ------------------------------------------------------------

    def list(
        self,
        resource_or_path: str,
        start: int | None = None,
        end: int | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        created_filter: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """The objects of one listing (a resource name or an API path)."""
        if resource_or_path.startswith("/"):
            request = ListingRequest(
                resource_or_path, start, end, dict(params or {}), created_filter
            )
        else:
            request = ListingRequest.resource(resource_or_path, start, end, params=params)
        for _key, obj in self.list_many([request]):
            yield obj

    def list_many(self, requests: Iterable[ListingRequest]) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(listing key, object)`` for every object of every listing, in no set order."""
        for page in self.pages(requests):
            for obj in page.objects:
                yield page.key, obj

    def checkpoint(self, conn: Any = None) -> None:
        """Record every page consumed so far, the current one included, now.

        With ``conn`` the records are written on it (the caller's transaction), so the
        caller's own writes for those pages and the progress commit together.
        """
        self._unsaved.extend(self._current)
        self._current = []
        self._save(conn)

    def pages(self, requests: Iterable[ListingRequest]) -> Iterator[ListedPage]:
        """Every page of every listing, as soon as it arrives (see the module docstring)."""
        run = _Run(self)
        pending = iter(requests)
        exhausted = False
        try:
            while True:
                while not exhausted and run.live < self.max_live_slices:
                    request = next(pending, None)
                    if request is None:
                        exhausted = True
                    else:
                        for task in self._start(request):
                            run.submit(task, new=True)
                if run.outstanding == 0:
                    break
                task, page, error = run.next_result()
                if error is not None:
                    raise ListingFailed(task.listing.key, task.slice, self.max_attempts) from error
                listed, self._current = self._plan(run, task, page)
                yield listed
                self._unsaved.extend(self._current)
                self._current = []
                if time.monotonic() - self._last_save >= self.checkpoint_seconds:
                    self._save()
        finally:
            run.stop()
            self._current = []  # a page the consumer left mid-way is not recorded
            self._save()

    def _plan(
        self, run: _Run, task: _Task, page: Mapping[str, Any]
    ) -> tuple[ListedPage, list[SliceRecord]]:
        """What a page means: the slice's next page, any split, the records to keep."""
        if page is _REFUSED_CUT:
            return self._refused_cut(run, task)
        objects = list(page.get("data") or [])
        created = [int(o["created"]) for o in objects] if task.slice.gte is not None else []
        _check_order(task, created)
        has_more = bool(page.get("has_more"))
        stop = stop_at(task.slice, [o.get("id") for o in objects]) if task.slice.stops else None
        if stop is not None:  # the next run of a crowded second is another slice's
            objects, created, has_more = objects[: stop + 1], created[: stop + 1], False
        listing = task.listing
        listing.count(task, -1)
        # what this slice still holds counts towards the listing's share
        rest = _estimate(created, Slice(task.slice.gte, created[-1])) if has_more and created else 0
        listing.known += rest
        room = min(
            self._target(listing, run.active) - listing.live, self.max_live_slices - run.live
        )
        listing.known -= rest
        listing.credits += has_more  # a full page pays for one more slice
        outcome = after_page(
            task.slice,
            created or [0] * len(objects),
            objects[-1].get("id") if objects else None,
            has_more,
            new_slices=max(0, min(room, listing.credits)),
            min_split_objects=self.min_split_objects,
        )
        listing.credits -= len(outcome.split_off)
        if task.crowded is not None:  # a cut that did not hold lists some twice
            objects = [o for o in objects if o.get("id") not in listing.crowded_ids]
            listing.crowded_ids.update(o.get("id") for o in objects)
        task.objects += len(objects)
        task.pages += 1
        if outcome.continuation is None:
            run.done(task)
            records = [_record(task, task.slice, done=True)]
        else:
            nxt = _Task(
                listing,
                task.slice_no,
                outcome.continuation,
                task.objects,
                task.pages,
                top=task.top,
                crowded=task.crowded,
            )
            nxt.estimate = _estimate(created, outcome.continuation)
            run.submit(nxt, new=False)
            records = [_record(task, outcome.continuation, done=False)]
        for part in outcome.split_off:
            child = _Task(listing, listing.next_no, part, estimate=_estimate(created, part))
            listing.next_no += 1
            run.submit(child, new=True)
            records.append(_record(child, child.slice, done=False))
        self._start_pending(run, listing)
        with self._stats_lock:
            self.stats.pages += 1
            self.stats.objects += len(objects)
            self.stats.splits += bool(outcome.split_off)
            self.stats.slices += len(outcome.split_off)
        done = outcome.continuation is None
        covered = None
        if done and task.slice.gte is not None and task.top is not None:
            covered = (task.slice.gte, task.top)
            if task.crowded is not None:
                whole = listing.relisted.get(task.crowded) == task.slice_no
                covered = _crowded_covered(listing, task, covered, whole=whole)
        finished = listing.live == 0 and not listing.pending
        listed = ListedPage(listing.key, objects, task.slice_no, done, finished, covered=covered)
        return listed, records

    def _refused_cut(self, run: _Run, task: _Task) -> tuple[ListedPage, list[SliceRecord]]:
        """Stripe refused a slice's cut (an id it does not have, or has deleted): the
        first such slice of its second lists the second whole from its top (objects
        the others list go out once), any later one ends, as that one covers it."""
        listing = task.listing
        assert task.crowded is not None
        listing.count(task, -1)
        with self._stats_lock:
            self.stats.pages += 1
        if task.crowded in listing.relisted:
            run.done(task)
            covered = _crowded_covered(listing, task, None)
            self._start_pending(run, listing)
            finished = listing.live == 0 and not listing.pending
            listed = ListedPage(listing.key, [], task.slice_no, True, finished, covered=covered)
            return listed, [_record(task, task.slice, done=True)]
        log.info("%s: a cut of second %d was refused: listing it whole", listing.key, task.crowded)
        listing.relisted[task.crowded] = task.slice_no
        task.slice = Slice(task.slice.gte, task.slice.lte)
        task.estimate = math.inf
        run.submit(task, new=False)
        listed = ListedPage(listing.key, [], task.slice_no, False)
        return listed, [_record(task, task.slice, done=False)]

    # --- internals -------------------------------------------------------------------

    def _start_pending(self, run: _Run, listing: _Listing) -> None:
        """Planned slices start as the listing has room, and never leave it none live."""
        if listing.pending:
            room = min(
                self._target(listing, run.active) - listing.live, self.max_live_slices - run.live
            )
            for planned in self._take_planned(listing, max(room, 1 if listing.live == 0 else 0)):
                run.submit(planned, new=True)

    def _target(self, listing: _Listing, active: set[_Listing]) -> int:
        """How many slices ``listing`` should have: its share of the work left, of workers.

        The account's budget is shared in proportion to the requests each listing has
        waiting, so giving each listing slices in proportion to what it has left lets
        every listing finish at about the same time, instead of the largest finishing
        alone at the end, held to its own endpoint's limit.
        """
        cap = self._in_flight(listing, 1, self.max_slices_per_listing)
        finite = [other.remaining for other in active if math.isfinite(other.remaining)]
        if not math.isfinite(listing.remaining) or not finite:
            return cap  # sizes not known yet: ramp up
        unknown = len(active) - len(finite)
        total = sum(finite) + unknown * max(finite)
        share = listing.remaining / total if total > 0 else 1.0
        return max(1, min(cap, round(self._in_flight(listing, 0, self.workers) * share)))

    def _in_flight(self, listing: _Listing, which: int, ceiling: int) -> int:
        """Pages worth having in flight for ``rates[which]`` (0: the account, 1: an
        endpoint) at the listing's latency; ``ceiling`` without rates or before its
        first answer. Each listing its own: an empty page comes back faster than a
        page of 100 objects, and a slow endpoint needs more slices than a fast one."""
        latency = listing.latency
        if self.rates is None or not math.isfinite(latency):
            return ceiling
        wanted = math.ceil(self.rates[which] * latency * LATENCY_MARGIN) + 1
        return max(2, min(ceiling, wanted))

    def _start(self, request: ListingRequest) -> list[_Task]:
        """The tasks a listing begins with: its first slice, or what a run left unfinished."""
        listing = _Listing(request, request.listing_key, credits=self.start_credits)
        with self._stats_lock:
            self.stats.listings += 1
        records = self.progress.load(self.run_key, listing.key) if self.progress else []
        if not records:
            s = first_slice(request.start, request.end, created_filter=request.created_filter)
            if request.plan and s.gte is not None:
                return self._start_planned(listing, s)
            task = _Task(listing, 0, s)
            listing.next_no = 1
            with self._stats_lock:
                self.stats.slices += 1
            self._unsaved.append(_record(task, s, done=False))
            return [task]
        listing.next_no = max(r.slice_no for r in records) + 1
        tasks = [
            _Task(
                listing, r.slice_no, r.slice, r.objects, r.pages, crowded=r.gte if r.stops else None
            )
            for r in records
            if not r.done
        ]
        _count_crowded(listing, tasks)
        with self._stats_lock:
            self.stats.slices += len(tasks)
            self.stats.resumed_slices += len(tasks)
            self.stats.skipped_slices += len(records) - len(tasks)
        return tasks

    def _start_planned(self, listing: _Listing, first: Slice) -> list[_Task]:
        """A listing cut where its request's plan says: every planned slice is recorded
        now (a run that dies resumes them like any other), and they start a few at a
        time as the listing has room, those of several pages first (their pages follow
        one another), then newest first."""
        parts = planned_slices(first, listing.request.plan, dict(listing.request.cuts))
        tasks = [
            _Task(listing, no, part, estimate=float(n), crowded=part.gte if part.stops else None)
            for no, (part, n) in enumerate(parts)
        ]
        _count_crowded(listing, tasks)
        listing.next_no = len(tasks)
        self._unsaved.extend(_record(t, t.slice, done=False) for t in tasks)
        tasks.sort(key=lambda t: (math.ceil(t.estimate / PAGE_SIZE), t.slice.gte or 0))
        listing.pending = tasks
        listing.planned = sum(t.estimate for t in tasks)
        return self._take_planned(listing, self.start_credits + 1)

    def _take_planned(self, listing: _Listing, n: int) -> list[_Task]:
        """Up to ``n`` of the listing's planned slices, to start now.

        Each stays the run of ~96 objects it was planned as: joining runs into chains
        of full pages was measured (A/B at 10k objects: the same calls, 0.4 s more a
        run, chains waiting on each answer); it saves calls only on listings far
        larger than a plan is worth making for (``reconcile.local_plan``).
        """
        taken = [listing.pending.pop() for _ in range(min(max(n, 0), len(listing.pending)))]
        listing.planned -= sum(t.estimate for t in taken)
        with self._stats_lock:
            self.stats.slices += len(taken)
        return taken

    def _worker(self, work: _WorkQueue, results: queue.SimpleQueue[Any]) -> None:
        while (task := work.get()) is not _STOP:
            try:
                results.put((task, self._fetch(task), None))
            except BaseException as exc:  # handed to the consumer's thread, raised there
                results.put((task, None, exc))

    def _fetch(self, task: _Task) -> Mapping[str, Any]:
        request = task.listing.request
        params = page_params(task.slice, request.params)
        for attempt in range(1, self.max_attempts + 1):
            with self._stats_lock:
                self.stats.calls += 1
            try:
                sent = time.monotonic()
                page = self.fetch_page(request.path, params)
                took = time.monotonic() - sent
                listing = task.listing
                if took < listing.latency:
                    with self._stats_lock:
                        listing.latency = min(listing.latency, took)
                return page
            except Exception as exc:
                if task.slice.stops and task.slice.cursor and _refused(exc):
                    return _REFUSED_CUT  # a cut Stripe does not know: see _refused_cut
                if attempt == self.max_attempts or not self.retryable(exc):
                    raise
                delay = min(self.backoff_cap_seconds, self.backoff_seconds * 2 ** (attempt - 1))
                log.warning(
                    "page of %s failed (%s), retry %d in %.1f s",
                    task.listing.key,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                with self._stats_lock:
                    self.stats.retries += 1
                self._sleep(delay * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def _save(self, conn: Any = None) -> None:
        self._last_save = time.monotonic()
        if self.progress is None or not self._unsaved:
            self._unsaved.clear()
            return
        latest: dict[tuple[str, int], SliceRecord] = {}
        for r in self._unsaved:  # in consumption order: the last state of a slice wins
            latest[(r.listing, r.slice_no)] = r
        self.progress.save(self.run_key, list(latest.values()), conn)
        self._unsaved.clear()


class Paced(Protocol):
    """What the lister needs of a rate limiter (``ratelimit.RateLimiter``)."""

    account_rate: float
    endpoint_rate: float


def paced_by(limiter: Paced | None) -> dict[str, Any]:
    """``SlicedLister`` options for a client paced by ``limiter``: slices follow its
    rates and the API's latency, up to 32 per listing (~1.3 s calls at 25/s)."""
    if limiter is None:
        return {}
    return {
        "rates": (limiter.account_rate, limiter.endpoint_rate),
        "max_slices_per_listing": 32,
    }


def _estimate(created: list[int], s: Slice) -> float:
    """Objects expected in ``s`` at the density of the page just read (one page if unknown)."""
    return expected_objects(created, s) if created and s.gte is not None else PAGE_SIZE


def _record(task: _Task, s: Slice, *, done: bool) -> SliceRecord:
    return SliceRecord(
        task.listing.key,
        task.slice_no,
        s.gte,
        s.lte,
        s.cursor,
        done,
        task.objects,
        task.pages,
        s.stops,
    )


# what ``_fetch`` answers for a slice whose cut Stripe refused
_REFUSED_CUT: Mapping[str, Any] = {"data": [], "has_more": False}


def _count_crowded(listing: _Listing, tasks: Iterable[_Task]) -> None:
    for task in tasks:
        if task.crowded is not None:
            listing.crowded[task.crowded] = listing.crowded.get(task.crowded, 0) + 1


def _crowded_covered(
    listing: _Listing, task: _Task, covered: tuple[int, int] | None, *, whole: bool = False
) -> tuple[int, int] | None:
    """What a done slice of a crowded second says is listed whole: the newer seconds it
    reached, and the crowded second itself, once, when every slice of it is done or
    when this one listed it from its top (``whole``, after a refused cut)."""
    second = task.crowded
    assert second is not None
    listing.crowded[second] -= 1
    top = covered[1] if covered is not None else second
    if (whole or listing.crowded[second] == 0) and second not in listing.whole:
        listing.whole.add(second)
        return (second, top)
    return (second + 1, top) if top > second else None


def _refused(exc: BaseException) -> bool:
    """Stripe refusing a request (a ``starting_after`` it does not know), not failing it."""
    return isinstance(exc, stripe.InvalidRequestError) and (exc.http_status or 400) < 500


def _check_order(task: _Task, created: list[int]) -> None:
    """Stripe lists newest first inside the requested range; anything else is a bug."""
    s = task.slice
    if not created:
        return
    if created[0] > s.lte or created[-1] < s.gte:
        raise InconsistentPage(
            f"{task.listing.key}: objects created {created[-1]}..{created[0]} "
            f"outside the slice [{s.gte}, {s.lte}] (does the server filter by created?)"
        )
    if any(a < b for a, b in pairwise(created)):
        raise InconsistentPage(f"{task.listing.key}: a page not in newest-first order")
