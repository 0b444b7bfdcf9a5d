"""A run's listings read at the API's speed limit, before any comparison.

Why: listed one page at a time and resource after resource, a run moves ~300
objects/s against Stripe (a call takes ~300 ms) while the account allows 100 calls/s.
Here every windowed listing of every compared resource, and ``/v1/events``, go
through one :class:`~stripe_pipeline.stripe_api.listing.SlicedLister` at once (time
slices split where the data is dense, each object listed once, a failed page retried
alone) and land in one spool file per listing. Comparison reads the files in the
catalog's order, each as it is written (a page is readable once it is flushed), so it
overlaps the listing instead of starting after it: the listing path does no comparison
work, and memory stays at the lister's pages in flight plus one comparison chunk,
whatever N is.

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

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import stripe
from sqlalchemy import Engine

from stripe_pipeline.catalog.model import Listing, Resource
from stripe_pipeline.config import load_spool_dir
from stripe_pipeline.reconcile.window import Window
from stripe_pipeline.stripe_api.listing import (
    DatabaseListingProgress,
    FetchPage,
    ListingRequest,
    SlicedLister,
    SliceRecord,
)

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
    """The spooled objects of a run's listings, listed by a background thread.

    :meth:`objects` follows its listing's file as pages are written and ends when the
    listing is complete (every slice listed), so the caller compares while the
    listings are still running: comparison never holds the listing back, and finishes
    soon after it. :meth:`finish` waits for all of them and raises what the listing
    failed with; :meth:`cancel` stops it.
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
        self._readable = dict.fromkeys(files, 0)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def has(self, name: str) -> bool:
        return name in self.files

    def wait(self, name: str) -> None:
        """Until the listing ``name`` is complete; raises if the listing failed."""
        self._done[name].wait()
        if self._error is not None:
            raise ListingAborted(f"listing {name!r} did not complete") from self._error

    def objects(self, name: str) -> Iterator[dict[str, Any]]:
        """The listing's objects inside its window (endpoints without a created filter
        are listed whole), in the order they were written: those of flushed pages as
        soon as they are, ending when the listing is complete (raises if it failed).
        The order is the file's whatever the timing, so results do not depend on it."""
        window = self.windows[name]
        position = 0
        with open(self.files[name], "rb") as f:
            while True:
                end, complete = self._readable_past(name, position)
                f.seek(position)
                while position < end:
                    line = f.readline()
                    position += len(line)
                    obj = orjson.loads(line)
                    created = obj.get("created")
                    if isinstance(created, int) and not window.contains(created):
                        continue
                    yield obj
                if complete:
                    return

    def _readable_past(self, name: str, position: int) -> tuple[int, bool]:
        """(how far the file is readable, whether the listing is complete), once there
        is more than ``position`` to read or the listing is complete."""
        done = self._done[name]
        with self._changed:
            self._changed.wait_for(lambda: done.is_set() or self._readable[name] > position)
        if not done.is_set():
            return self._readable[name], False
        if self._error is not None:
            raise ListingAborted(f"listing {name!r} did not complete") from self._error
        return os.path.getsize(self.files[name]), True  # flushed whole

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
        if self._thread is not None:
            self._thread.join()

    def discard(self) -> None:
        """Delete the files (after the run's results are committed)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _flushed(self, name: str, length: int) -> None:
        """Whole pages of ``name`` are in its file up to ``length``: readers may go on."""
        with self._changed:
            self._readable[name] = length
            self._changed.notify_all()

    def _finished(self, name: str) -> None:
        with self._changed:
            self._done[name].set()
            self._changed.notify_all()

    def _failed(self, exc: BaseException) -> None:
        with self._changed:
            self._error = exc
            for done in self._done.values():
                done.set()
            self._changed.notify_all()


class ListingAborted(RuntimeError):
    """A listing the run waited for failed (``__cause__``) or was cancelled."""


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


def prelist(
    engine: Engine,
    fetch_page: FetchPage,
    planned: Sequence[PlannedListing],
    *,
    run_key: str,
    root: Path | None = None,
    workers: int = 40,
    lister_options: dict[str, Any] | None = None,
) -> Prelisted:
    """Start listing every planned listing at once, each into its spool file, in a
    background thread; resumes ``run_key``. Read with :meth:`Prelisted.objects`."""
    root = root or spool_root()
    directory = root / spool_name(engine, run_key)
    sweep_spools(root, engine, keep=directory.name)
    directory.mkdir(parents=True, exist_ok=True)
    progress = DatabaseListingProgress(engine)
    records = progress.load(run_key, SPOOL_RECORD)
    recorded = {r.slice_no: r.objects for r in records if r.slice_no >= 0}
    # a resumed run observed its first objects when it first started
    observed_at = next((r.gte for r in records if r.slice_no == -1), None) or int(time.time())
    if recorded and not all(
        (directory / f"{i:03d}.jsonl").exists()
        and (directory / f"{i:03d}.jsonl").stat().st_size >= length
        for i, length in recorded.items()
    ):
        log.warning("listing %s: spool files missing here, listing everything again", run_key)
        progress.forget(run_key)
        recorded, observed_at = {}, int(time.time())
    files = {p.name: directory / f"{i:03d}.jsonl" for i, p in enumerate(planned)}
    prelisted = Prelisted(directory, files, {p.name: p.window for p in planned}, observed_at)
    outputs: list[BinaryIO] = []
    try:
        for i, p in enumerate(planned):
            out = open(files[p.name], "ab" if i in recorded else "wb")  # noqa: SIM115
            out.truncate(recorded.get(i, 0))  # a page written but never recorded goes
            out.seek(0, os.SEEK_END)
            outputs.append(out)
            slices = progress.load(run_key, p.request.listing_key) if recorded else []
            if slices and all(r.done for r in slices):  # completed before a crash
                prelisted._finished(p.name)
    except BaseException:
        for out in outputs:
            out.close()
        raise
    spool_progress = _SpoolProgress(progress, outputs)
    spool_progress.lengths = [recorded.get(i, 0) for i in range(len(planned))]
    for i, p in enumerate(planned):  # pages a resumed run wrote before are readable
        prelisted._flushed(p.name, spool_progress.lengths[i])
    spool_progress.observed_at = observed_at
    lister = SlicedLister(
        fetch_page,
        workers=workers,
        progress=spool_progress,
        run_key=run_key,
        **(lister_options or {}),
    )
    thread = threading.Thread(
        target=_list_into_files,
        args=(lister, planned, outputs, spool_progress, prelisted),
        name=f"prelist-{run_key}",
        daemon=True,
    )
    prelisted._thread = thread
    thread.start()
    return prelisted


def _list_into_files(
    lister: SlicedLister,
    planned: Sequence[PlannedListing],
    outputs: list[BinaryIO],
    spool_progress: _SpoolProgress,
    prelisted: Prelisted,
) -> None:
    """The background thread: pages into files; a listing's file is flushed, then
    announced complete."""
    index = {p.request.listing_key: i for i, p in enumerate(planned)}
    started = time.perf_counter()
    try:
        for page in lister.pages(p.request for p in planned):
            i = index[page.key]
            out = outputs[i]
            out.write(b"".join(orjson.dumps(obj) + b"\n" for obj in page.objects))
            spool_progress.lengths[i] = out.tell()
            out.flush()  # the page is readable: comparison follows the file
            if page.listing_done:
                prelisted._finished(planned[i].name)
            else:
                prelisted._flushed(planned[i].name, spool_progress.lengths[i])
            if prelisted._stop.is_set():
                raise ListingAborted("cancelled")
        lister.checkpoint()
        for out, p in zip(outputs, planned, strict=True):  # those a resume found complete
            out.flush()
            prelisted._finished(p.name)
    except BaseException as exc:
        prelisted._failed(exc)
    finally:
        for out in outputs:
            out.close()
        prelisted.stats = {
            **lister.stats.as_dict(),
            "seconds": round(time.perf_counter() - started, 3),
        }
        log.info("listed %s listings ahead: %s", len(planned), prelisted.stats)


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
