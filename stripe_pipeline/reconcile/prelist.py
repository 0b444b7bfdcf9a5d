"""A run's listings read at the API's speed limit, before any comparison.

Why: listed one page at a time and resource after resource, a run moves ~300
objects/s against Stripe (a call takes ~300 ms) while the account allows 100 calls/s.
Here every windowed listing of every compared resource, and ``/v1/events``, go
through one :class:`~stripe_pipeline.stripe_api.listing.SlicedLister` at once (time
slices split where the data is dense, each object listed once, a failed page retried
alone) and land in one spool file per listing, written by a process of its own
(``listing_process``) when the client can be rebuilt there, else by a thread.
Comparison reads the files as they are written (a page is readable once it is
flushed), a chunk at a time from whichever has the most waiting
(``compare.compare_prelisted``), so it overlaps the listing instead of starting after
it: the listing path does no comparison work, and memory stays at the lister's pages
in flight plus one comparison chunk, whatever N is.

Resume: the spool files live in a directory named by the run's key, and the lister's
progress (``stripe_listing_slices``) records with each checkpoint how far each file
was written, in one transaction. A run with the same key (the same windows and
resources: a Dagster partition, ``backfill --since/--until`` run again) truncates
each file to its recorded length and lists only the slices that were not completed.
The files are on this host: a resume on another host lists everything again.

Listings that depend on what was listed (per customer, per parent) and fakes without
``list_page`` or ``created`` filters keep the sequential path (``api.list_window``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import orjson
import stripe
from sqlalchemy import Engine

from stripe_pipeline.config import load_spool_dir
from stripe_pipeline.db.engine import shareable_url
from stripe_pipeline.reconcile.window import Window
from stripe_pipeline.stripe_api.client import ClientSpec
from stripe_pipeline.stripe_api.listing import (
    DatabaseListingProgress,
    FetchPage,
    ListingRequest,
    SlicedLister,
    SliceRecord,
)

if TYPE_CHECKING:  # the listing process needs none of the catalog
    from stripe_pipeline.catalog.model import Listing, Resource

log = logging.getLogger(__name__)

EVENTS_LISTING = "events"
# the progress rows that hold each spool file's committed length (slice_no: file index)
SPOOL_RECORD = "#spool"


def can_prelist(api: Any, server_filter: bool) -> bool:
    """Only a client with ``list_page`` against a server that filters by ``created``."""
    return server_filter and callable(getattr(api, "list_page", None))


def prelistable(listing: Listing) -> bool:
    """A listing whose pages do not depend on what the run listed before it."""
    return not listing.per_customer and listing.per_parent is None


@dataclass(frozen=True, slots=True)
class PlannedListing:
    """One spool file: a listing's request and the window applied when reading it."""

    name: str  # "events", or "<object type>/<listing name>"
    request: ListingRequest
    window: Window


def listing_name(resource: Resource, listing: Listing) -> str:
    return f"{resource.object_type}/{listing.name}"


def plan_listings(
    resources: Sequence[Resource], windows: dict[str, Window], *, events: Window | None
) -> list[PlannedListing]:
    """What a run lists ahead: events (when backfilling) and each prelistable listing."""
    planned = []
    if events is not None:
        planned.append(
            PlannedListing(
                EVENTS_LISTING,
                ListingRequest("/v1/events", events.start, events.end),
                events,
            )
        )
    for resource in resources:
        window = windows[resource.object_type]
        if resource.listings and all(listing.full for listing in resource.listings):
            window = Window(None, window.end)
        for listing in resource.listings:
            if not prelistable(listing):
                continue
            if listing.created_filter:
                request = ListingRequest(
                    listing.path, window.start, window.end, dict(listing.params)
                )
            else:  # listed whole, the window applied when read
                request = ListingRequest(
                    listing.path, params=dict(listing.params), created_filter=False
                )
            planned.append(PlannedListing(listing_name(resource, listing), request, window))
    return planned


def run_key_of(planned: Sequence[PlannedListing]) -> str:
    """The same listings over the same windows make the same key (so a rerun resumes)."""
    digest = hashlib.sha256("\n".join(p.request.listing_key for p in planned).encode())
    return f"reconcile:{digest.hexdigest()[:32]}"


class Prelisted:
    """The spooled objects of a run's listings, listed by a listing process or a
    background thread, which report each flushed page here (``ListingSink``).

    :meth:`objects` follows one listing's file as pages are written and ends when the
    listing is complete (every slice listed); :meth:`reader` and :meth:`wait_for_any`
    follow several at once. So the caller compares while the listings are still
    running: comparison never holds the listing back, and finishes soon after it.
    :meth:`finish` waits for all of them and raises what the listing failed with;
    :meth:`cancel` stops it.
    """

    def __init__(
        self, directory: Path, files: dict[str, Path], windows: dict[str, Window], observed_at: int
    ) -> None:
        self.directory = directory
        self.files = files
        self.windows = windows
        self.observed_at = observed_at
        self.stats: dict[str, Any] = {}
        self._done = {name: threading.Event() for name in files}
        # per file: how far whole pages are flushed (readable while it is written)
        self._flushed_to = dict.fromkeys(files, 0)
        # per file: (length, gte, lte) of each slice done: once the file is read to
        # ``length``, every object of the listing created in [gte, lte] was read
        self._covered: dict[str, list[tuple[int, int, int]]] = {name: [] for name in files}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._on_stop: Callable[[], None] | None = None  # asks a listing process to stop

    @property
    def elsewhere(self) -> bool:
        """Another process lists: its API calls are not this process's client's."""
        return self._on_stop is not None

    def has(self, name: str) -> bool:
        return name in self.files

    def objects(self, name: str) -> Iterator[dict[str, Any]]:
        """The listing's objects inside its window (endpoints without a created filter
        are listed whole), in the order they were written: those of flushed pages as
        soon as they are, ending when the listing is complete (raises if it failed).
        The order is the file's whatever the timing, so results do not depend on it."""
        with self.reader(name) as reader:
            while not reader.exhausted():
                self.wait_for_any([reader])
                yield from reader.take(READ_BATCH)

    def reader(self, name: str) -> SpoolReader:
        """A reader of one listing that never waits (to read several as they fill)."""
        return SpoolReader(self, name)

    def wait_for_any(self, readers: Iterable[SpoolReader], timeout: float | None = None) -> None:
        """Until one of ``readers`` has objects to take or is exhausted."""
        readers = list(readers)
        with self._changed:
            self._changed.wait_for(
                lambda: any(r.ready() or r.exhausted() for r in readers), timeout
            )

    def _readable(self, name: str) -> tuple[int, bool]:
        """(how far the file is readable, whether the listing is complete); raises if
        the listing failed."""
        with self._changed:
            complete = self._done[name].is_set()
            end = self._flushed_to[name]
        if complete and self._error is not None:
            raise ListingAborted(f"listing {name!r} did not complete") from self._error
        if complete:
            end = os.path.getsize(self.files[name])  # flushed whole
        return end, complete

    def finish(self) -> dict[str, Any]:
        """Wait for every listing; their stats (raises what the listing failed with)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self.stats

    def cancel(self) -> None:
        """Stop listing (the run failed elsewhere); what was recorded stays for a resume."""
        self._stop.set()
        if self._on_stop is not None:
            self._on_stop()
        if self._thread is not None:
            self._thread.join()

    def discard(self) -> None:
        """Delete the files (after the run's results are committed)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- what the listing reports (ListingSink) ---

    def flushed(self, name: str, length: int, covered: tuple[int, int] | None = None) -> None:
        """Whole pages of ``name`` are in its file up to ``length``: readers may go on.
        ``covered``: the page ended a slice, which listed these created seconds whole."""
        with self._changed:
            self._flushed_to[name] = length
            if covered is not None:
                self._covered[name].append((length, *covered))
            self._changed.notify_all()

    def covered(self, name: str, read_to: int) -> list[tuple[int, int]]:
        """The created ranges of ``name`` listed whole by slices whose pages all lie
        before ``read_to`` in its file (a resumed run reports only its own slices)."""
        with self._changed:
            return [(gte, lte) for length, gte, lte in self._covered[name] if length <= read_to]

    def finished(self, name: str) -> None:
        with self._changed:
            self._done[name].set()
            self._changed.notify_all()

    def failed(self, exc: BaseException) -> None:
        with self._changed:
            self._error = exc
            for done in self._done.values():
                done.set()
            self._changed.notify_all()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def listed(self, stats: dict[str, Any]) -> None:
        self.stats = stats


class ListingAborted(RuntimeError):
    """A listing the run waited for failed (``__cause__``) or was cancelled."""


# objects read at once by ``Prelisted.objects``
READ_BATCH = 500


class SpoolReader:
    """One listing's spool file, read as far as it is flushed: :meth:`take` never
    waits, so a caller can follow several listings and compare whichever has objects
    ready (``Prelisted.wait_for_any`` waits for one). Objects come in the file's
    order, outside the listing's window skipped."""

    def __init__(self, prelisted: Prelisted, name: str) -> None:
        self.name = name
        self._prelisted = prelisted
        self._window = prelisted.windows[name]
        self._file = open(prelisted.files[name], "rb")  # noqa: SIM115  (closed by close())
        self._position = 0

    def ready(self) -> int:
        """Bytes flushed and not read yet (raises if the listing failed)."""
        end, _complete = self._prelisted._readable(self.name)
        return max(0, end - self._position)

    def covered(self) -> list[tuple[int, int]]:
        """The created ranges whose objects this reader has all taken (``Prelisted.covered``)."""
        return self._prelisted.covered(self.name, self._position)

    def exhausted(self) -> bool:
        """The listing is complete and every object of it was taken."""
        end, complete = self._prelisted._readable(self.name)
        return complete and self._position >= end

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` objects of what is flushed (none when nothing is)."""
        end, _complete = self._prelisted._readable(self.name)
        objects: list[dict[str, Any]] = []
        f = self._file
        f.seek(self._position)
        while self._position < end and len(objects) < limit:
            line = f.readline()
            self._position += len(line)
            obj = orjson.loads(line)
            created = obj.get("created")
            if isinstance(created, int) and not self._window.contains(created):
                continue
            objects.append(obj)
        return objects

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpoolReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SpoolProgress:
    """The lister's progress, saved together with how far each spool file is written.

    The lister saves only pages the consumer has finished with; the consumer writes a
    page to its file before asking for the next, so the lengths recorded here always
    hold exactly the recorded pages.
    """

    def __init__(self, inner: DatabaseListingProgress, outputs: list[BinaryIO]) -> None:
        self.inner = inner
        self.outputs = outputs
        self.lengths = [0] * len(outputs)  # per file: the end of its last finished page
        self.observed_at = int(time.time())  # when the first page was asked for

    def load(self, run_key: str, listing: str) -> list[SliceRecord]:
        return self.inner.load(run_key, listing)

    def save(self, run_key: str, records: Sequence[SliceRecord], conn: Any = None) -> None:
        for out in self.outputs:
            out.flush()
            os.fsync(out.fileno())
        lengths = [
            SliceRecord(SPOOL_RECORD, i, None, None, None, False, objects=length)
            for i, length in enumerate(self.lengths)
        ]
        started = SliceRecord(SPOOL_RECORD, -1, self.observed_at, None, None, False)
        self.inner.save(run_key, [*records, *lengths, started], conn)

    def forget(self, run_key: str) -> None:
        self.inner.forget(run_key)


def spool_root() -> Path:
    """Where listings are spooled: ``STRIPE_PIPELINE_SPOOL_DIR`` or the temp directory."""
    return load_spool_dir() or Path(tempfile.gettempdir()) / "stripe-pipeline"


# a failed run's spool files wait this long for a rerun to resume them; after that a
# rerun lists again, and the files of runs nobody reran stop filling the disk
SPOOL_KEEP_SECONDS = 7 * 86400


def sweep_spools(root: Path, engine: Engine, keep: str, now: float | None = None) -> list[Path]:
    """Delete this database's spool directories untouched for ``SPOOL_KEEP_SECONDS``
    (except ``keep``, the run starting now); returns what was deleted."""
    prefix = spool_name(engine, "")
    cutoff = (time.time() if now is None else now) - SPOOL_KEEP_SECONDS
    swept = []
    for path in root.glob(f"{prefix}*") if root.is_dir() else ():
        if path.name != keep and path.is_dir() and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
    if swept:
        log.info("deleted %s spool directories of runs never resumed", len(swept))
    return swept


def spool_name(engine: Engine, run_key: str) -> str:
    """A directory per database and run key: two deployments on one host never share."""
    url = engine.url.render_as_string(hide_password=True)
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{run_key.replace(':', '-')}"


@dataclass(frozen=True, slots=True)
class SpoolSetup:
    """The spool files of a run, ready to be appended to: each truncated to what the
    progress store recorded (a page written but never recorded goes)."""

    run_key: str
    files: list[Path]
    lengths: list[int]  # per file: its recorded length
    observed_at: int
    complete: list[bool]  # per file: every slice of its listing was done before


def prelist(
    engine: Engine,
    fetch_page: FetchPage,
    planned: Sequence[PlannedListing],
    *,
    run_key: str,
    root: Path | None = None,
    workers: int = 40,
    lister_options: dict[str, Any] | None = None,
    client: ClientSpec | None = None,
) -> Prelisted:
    """Start listing every planned listing at once, each into its spool file; resumes
    ``run_key``. Read with :meth:`Prelisted.objects`.

    With ``client`` (``StripeApi.spec()``) the listing runs in a process of its own
    (``listing_process``), so its HTTP and decoding never compete with comparison
    for this process's interpreter lock; without it, in a thread calling
    ``fetch_page``.
    """
    root = root or spool_root()
    directory = root / spool_name(engine, run_key)
    sweep_spools(root, engine, keep=directory.name)
    setup = prepare_spool(engine, directory, planned, run_key)
    prelisted = Prelisted(
        directory,
        {p.name: f for p, f in zip(planned, setup.files, strict=True)},
        {p.name: p.window for p in planned},
        setup.observed_at,
    )
    for p, length, complete in zip(planned, setup.lengths, setup.complete, strict=True):
        prelisted.flushed(p.name, length)  # pages a resumed run wrote before are readable
        if complete:
            prelisted.finished(p.name)
    options = {"workers": workers, **(lister_options or {})}
    database_url = shareable_url(engine)
    if client is not None and database_url is not None:
        _start_process(prelisted, client, database_url, planned, setup, options)
    else:
        _start_thread(prelisted, engine, fetch_page, planned, setup, options)
    return prelisted


def prepare_spool(
    engine: Engine, directory: Path, planned: Sequence[PlannedListing], run_key: str
) -> SpoolSetup:
    """The run's spool directory, resumed where the progress store says (or started
    afresh when the files it recorded are not on this host)."""
    directory.mkdir(parents=True, exist_ok=True)
    progress = DatabaseListingProgress(engine)
    records = progress.load(run_key, SPOOL_RECORD)
    recorded = {r.slice_no: r.objects for r in records if r.slice_no >= 0}
    # a resumed run observed its first objects when it first started
    observed_at = next((r.gte for r in records if r.slice_no == -1), None) or int(time.time())
    files = [directory / f"{i:03d}.jsonl" for i in range(len(planned))]
    if recorded and not all(
        i < len(files) and files[i].exists() and files[i].stat().st_size >= length
        for i, length in recorded.items()
    ):
        log.warning("listing %s: spool files missing here, listing everything again", run_key)
        progress.forget(run_key)
        recorded, observed_at = {}, int(time.time())
    complete = []
    for i, p in enumerate(planned):
        with open(files[i], "ab" if i in recorded else "wb") as out:
            out.truncate(recorded.get(i, 0))
        slices = progress.load(run_key, p.request.listing_key) if recorded else []
        complete.append(bool(slices) and all(r.done for r in slices))  # done before a crash
    lengths = [recorded.get(i, 0) for i in range(len(planned))]
    return SpoolSetup(run_key, files, lengths, observed_at, complete)


class ListingSink(Protocol):
    """Where the listing reports: a :class:`Prelisted` in this process, or the pipe
    to the run's process (``listing_process``)."""

    def flushed(self, name: str, length: int, covered: tuple[int, int] | None = None) -> None: ...

    def finished(self, name: str) -> None: ...

    def failed(self, exc: BaseException) -> None: ...

    def stopping(self) -> bool: ...

    def listed(self, stats: dict[str, Any]) -> None: ...


def list_into_files(
    engine: Engine,
    fetch_page: FetchPage,
    planned: Sequence[PlannedListing],
    setup: SpoolSetup,
    sink: ListingSink,
    options: dict[str, Any],
) -> None:
    """List into the spool files, reporting each flushed page to ``sink``; a
    listing's file is flushed, then announced complete. Reports a failure, never
    raises it."""
    started = time.perf_counter()
    outputs: list[BinaryIO] = []
    lister: SlicedLister | None = None
    try:
        for f in setup.files:
            outputs.append(open(f, "ab"))  # noqa: SIM115  (closed below)
        spool_progress = _SpoolProgress(DatabaseListingProgress(engine), outputs)
        spool_progress.lengths = list(setup.lengths)
        spool_progress.observed_at = setup.observed_at
        lister = SlicedLister(fetch_page, progress=spool_progress, run_key=setup.run_key, **options)
        index = {p.request.listing_key: i for i, p in enumerate(planned)}
        for page in lister.pages(p.request for p in planned):
            i = index[page.key]
            out = outputs[i]
            out.write(b"".join(orjson.dumps(obj) + b"\n" for obj in page.objects))
            spool_progress.lengths[i] = out.tell()
            out.flush()  # the page is readable: comparison follows the file
            if page.listing_done:
                sink.finished(planned[i].name)
            else:
                sink.flushed(planned[i].name, spool_progress.lengths[i], page.covered)
            if sink.stopping():
                raise ListingAborted("cancelled")
        lister.checkpoint()
        for out, p in zip(outputs, planned, strict=True):  # those a resume found complete
            out.flush()
            sink.finished(p.name)
    except BaseException as exc:
        sink.failed(exc)
    finally:
        for out in outputs:
            out.close()
        stats = {
            **(lister.stats.as_dict() if lister is not None else {}),
            "seconds": round(time.perf_counter() - started, 3),
            "pid": os.getpid(),  # which process listed (the run's own, or its listing process)
        }
        log.info("listed %s listings ahead: %s", len(planned), stats)
        sink.listed(stats)


def _start_thread(
    prelisted: Prelisted,
    engine: Engine,
    fetch_page: FetchPage,
    planned: Sequence[PlannedListing],
    setup: SpoolSetup,
    options: dict[str, Any],
) -> None:
    thread = threading.Thread(
        target=list_into_files,
        args=(engine, fetch_page, planned, setup, prelisted, options),
        name=f"prelist-{setup.run_key}",
        daemon=True,
    )
    prelisted._thread = thread
    thread.start()


def describe(exc: BaseException) -> str:
    """A failure as a run's error shows it: its type and its message on one line."""
    message = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class ListingProcessError(RuntimeError):
    """What the listing process failed with: its type and message (the exception
    itself stayed in that process)."""


# how long a cancelled listing process has to stop before it is killed
STOP_SECONDS = 10.0


def _start_process(
    prelisted: Prelisted,
    client: ClientSpec,
    database_url: str,
    planned: Sequence[PlannedListing],
    setup: SpoolSetup,
    options: dict[str, Any],
) -> None:
    """Run the listing in ``python -m stripe_pipeline.reconcile.listing_process``.

    The job goes on its stdin (it holds the API key: never on the command line);
    the process answers one JSON line per flushed page on its stdout, which a thread
    here hands to ``prelisted``. Closing its stdin asks it to stop; a process that
    dies (killed, out of memory) fails the listings it had not completed.
    """
    job = {
        "client": client.to_json(),
        "database_url": database_url,
        "listings": [{"name": p.name, "request": _request_doc(p.request)} for p in planned],
        "setup": {
            "run_key": setup.run_key,
            "files": [str(f) for f in setup.files],
            "lengths": setup.lengths,
            "observed_at": setup.observed_at,
            "complete": setup.complete,
        },
        "options": options,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripe_pipeline.reconcile.listing_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(OSError):  # it died at once: the reader below says how
        proc.stdin.write(orjson.dumps(job) + b"\n")
        proc.stdin.flush()

    def follow() -> None:
        reported = False
        for line in proc.stdout:  # type: ignore[union-attr]
            message = orjson.loads(line)
            if "flushed" in message:
                covered = message.get("covered")
                prelisted.flushed(
                    message["flushed"], message["length"], tuple(covered) if covered else None
                )
            elif "finished" in message:
                prelisted.finished(message["finished"])
            elif "failed" in message:
                reported = True
                prelisted.failed(ListingProcessError(message["failed"]))
            elif "listed" in message:
                prelisted.listed(message["listed"])
        code = proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        if not reported and not all(done.is_set() for done in prelisted._done.values()):
            prelisted.failed(
                ListingProcessError(
                    f"the listing process ended (exit code {code}) before its listings completed"
                )
            )

    def stop() -> None:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()

    thread = threading.Thread(target=follow, name=f"prelist-{setup.run_key}", daemon=True)
    prelisted._thread = thread
    prelisted._on_stop = stop
    thread.start()


def _request_doc(request: ListingRequest) -> dict[str, Any]:
    return {
        "path": request.path,
        "start": request.start,
        "end": request.end,
        "params": dict(request.params),
        "created_filter": request.created_filter,
        "key": request.key,
        "plan": request.plan,
        "cuts": request.cuts,
    }


def request_from_doc(doc: dict[str, Any]) -> ListingRequest:
    plan = tuple((int(lo), int(n)) for lo, n in doc.get("plan", ()))
    cuts = tuple((int(second), tuple(ids)) for second, ids in doc.get("cuts", ()))
    return ListingRequest(**{**doc, "plan": plan, "cuts": cuts})


def forget(engine: Engine, prelisted: Prelisted | None, run_key: str | None) -> None:
    """After the run committed: its progress rows and spool files serve no resume."""
    if run_key is not None:
        DatabaseListingProgress(engine).forget(run_key)
    if prelisted is not None:
        prelisted.discard()


def list_each(
    fetch_page: FetchPage, requests: Iterable[ListingRequest], *, workers: int = 40
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Many small listings at once (one per customer or parent, without a created
    filter): ``(request key, object)``. A listing Stripe answers 404 for (its parent
    is gone) lists nothing, as the sequential path does."""

    def page_or_none(path: str, params: dict[str, Any]) -> Mapping[str, Any]:
        try:
            return fetch_page(path, params)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return {"data": [], "has_more": False}
            raise

    lister = SlicedLister(page_or_none, workers=workers)
    for page in lister.pages(requests):
        for obj in page.objects:
            yield page.key, obj
