"""Planning a parallel listing by time slices: pure functions, data in, slices out.

Stripe lists newest first and can only be cut by ``created`` ranges with opaque
cursors (``starting_after``). A *slice* is a range of creation seconds ``[gte, lte]``
(both inclusive) plus, once it has been paged into, the cursor of the last object it
returned. The listing engine (``listing.py``) does the I/O; this module decides what a
page means for its slice:

- ``has_more`` false: the slice is done.
- ``has_more`` true: every object newer than the page's oldest one (second ``t``) has
  been listed, so the rest of the slice is ``[gte, t]`` after the cursor. That rest
  is paged on with the cursor (continuation) and, when the engine has room for more
  parallelism, split in two by time: the older half ``[gte, mid - 1]`` becomes a new
  slice without a cursor, the newer half ``[mid, t]`` keeps the cursor (it holds the
  part of second ``t`` not yet listed). A slice inside one second cannot be split and
  is paged with the cursor alone.

Each page with ``has_more`` splits off at most one slice, and every slice ends with
one page that has no ``has_more``, so a listing of ``N`` objects costs at most
``2 * floor(N / 100) + 1`` calls whatever the distribution of creation times
(Stripe's sync engine proves the same bound for binary subdivision); on evenly spread
data the split rule below keeps it near ``N / 100`` plus one partial page per slice.

The rule: split only when the rest is expected to hold at least ``min_split_objects``
(the density of the page just read, ``objects / seconds it spans``, times the
seconds left), so slices that are nearly done are paged to their end instead of
being cut into two partial pages. The estimate is made again on every page, so a
dense burst below a sparse stretch is split as soon as it is reached.

Results: the slices of a listing are disjoint and cover its window, so the objects
listed are exactly the window's, each once, whatever order the pages come back in.
The *order* in which objects reach a consumer is not defined; key them by id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

PAGE_SIZE = 100
# the earliest second a Stripe object can carry (Stripe launched in 2011): a window
# without a start begins here, so that halving it is not spent on empty decades
STRIPE_EPOCH = 1_262_304_000  # 2010-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Slice:
    """A part of one listing: created seconds ``[gte, lte]`` after ``cursor``.

    ``gte``/``lte`` are None for listings without a ``created`` filter (per-customer
    sub-listings such as ``/v1/customers/{id}/payment_methods``): those are one slice.
    """

    gte: int | None
    lte: int | None
    cursor: str | None = None

    @property
    def splittable_seconds(self) -> int:
        """How many whole seconds this slice spans (0 when it has no created bounds)."""
        if self.gte is None or self.lte is None:
            return 0
        return self.lte - self.gte + 1


def first_slice(start: int | None, end: int | None, *, created_filter: bool = True) -> Slice:
    """The one slice a listing starts from."""
    if not created_filter:
        if start is not None or end is not None:
            raise ValueError("a listing without a created filter takes no window")
        return Slice(None, None)
    if end is None:
        raise ValueError("a created window needs an end (e.g. now)")
    begin = STRIPE_EPOCH if start is None else int(start)
    if begin > end:
        raise ValueError(f"window start {begin} is after its end {end}")
    return Slice(begin, int(end))


def page_params(s: Slice, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The query of the next page of ``s``: the caller's params, the window, the cursor."""
    query: dict[str, Any] = {**(params or {}), "limit": PAGE_SIZE}
    if "created" in query or "starting_after" in query or "ending_before" in query:
        raise ValueError("created and cursors belong to the lister, not to the params")
    if s.gte is not None:
        query["created"] = {"gte": s.gte, "lte": s.lte}
    if s.cursor is not None:
        query["starting_after"] = s.cursor
    return query


@dataclass(frozen=True, slots=True)
class PageOutcome:
    """What one page means for its slice.

    ``continuation``: the same slice's next page (None when the slice is done);
    ``split_off``: a new slice to list in parallel (None when not split).
    """

    continuation: Slice | None
    split_off: Slice | None = None


class InconsistentPage(RuntimeError):
    """A page that cannot be continued (``has_more`` with no objects, no id)."""


def after_page(
    s: Slice,
    created: Sequence[int],
    last_id: str | None,
    has_more: bool,
    *,
    may_split: bool,
    min_split_objects: int = 2 * PAGE_SIZE,
) -> PageOutcome:
    """Plan the rest of ``s`` after a page whose objects have ``created`` (newest first)."""
    if not has_more:
        return PageOutcome(None)
    if not created or not last_id:
        raise InconsistentPage("a page with has_more must end with an object that has an id")
    oldest = int(created[-1])
    if s.gte is None:  # no created filter: page on with the cursor
        return PageOutcome(replace(s, cursor=last_id))
    if not s.gte <= oldest <= s.lte:
        raise InconsistentPage(
            f"object created at {oldest} is outside the slice [{s.gte}, {s.lte}]"
        )
    rest = Slice(s.gte, oldest, last_id)
    if not may_split or oldest == s.gte:
        return PageOutcome(rest)
    if expected_objects(created, rest) < min_split_objects:
        return PageOutcome(rest)
    mid = (s.gte + oldest + 1) // 2  # gte < mid <= oldest: both halves hold a second
    return PageOutcome(Slice(mid, oldest, last_id), Slice(s.gte, mid - 1))


def expected_objects(created: Sequence[int], rest: Slice) -> float:
    """Objects expected in ``rest`` if it is as dense as the page just read."""
    newest, oldest = int(created[0]), int(created[-1])
    density = len(created) / (newest - oldest + 1)
    return density * rest.splittable_seconds
