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

A page may cut its slice's rest into several parts at once (a large listing or a
dense burst reaches its share of the rate limit in one round trip instead of ``log2``
of them); the engine decides how many it wants (``new_slices``) and keeps their
total in check (one new slice per full page read, plus a starting allowance), so
that a listing of ``N`` objects costs at most about ``2 * N / 100`` calls whatever
the distribution of creation times: every slice ends with one page that has no
``has_more`` (Stripe's sync engine proves the same bound for binary subdivision).
On evenly spread data the split rule below keeps it near ``N / 100`` plus one partial
page per slice.

The rule: split only when the rest is expected to hold at least ``min_split_objects``
(the density of the page just read, ``objects / seconds it spans``, times the
seconds left), so slices that are nearly done are paged to their end instead of
being cut into two partial pages. The estimate is made again on every page, so a
dense burst below a sparse stretch is split as soon as it is reached.

A listing may also start from a *plan*: where the caller already knows how its objects
are spread (reconciliation knows the local table, which holds nearly what Stripe
has), ``plan_from_counts`` groups the seconds into runs of about a page, and
``planned_slices`` cuts the window there. Every slice then starts at once, most end
after one page, and none waits a round trip to learn the density; a slice the plan
underestimated is paged and split as above.

A second holding more than a page cannot be cut by time: Stripe pages it by cursor
alone, one answer after another (500 objects in one second: five round trips in a
row). Where the caller knows ids of that second (the local rows), the plan carries
*cuts*: ids about a page apart, in the order the caller expects Stripe to list them.
``planned_slices`` then gives the second one slice per cut, each starting after its
cut (``starting_after``) and all of them ending at the first cut they meet
(``Slice.stops``, see ``stop_at``): the cuts that exist in that second split it into
runs listed each once, in parallel, whatever order Stripe really lists them in. A
cut that does not hold (an id Stripe does not have, or has in another second) only
makes some slice longer; the engine lists a slice whose cut Stripe refuses again from
the top of the second and drops the objects listed twice.

Results: the slices of a listing are disjoint and cover its window, so the objects
listed are exactly the window's, each once, whatever order the pages come back in.
The *order* in which objects reach a consumer is not defined; key them by id.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
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
    ``stops``: the cuts of a crowded second (see the module docstring); the slice ends
    with the first of them it lists. Such a slice is never split.
    """

    gte: int | None
    lte: int | None
    cursor: str | None = None
    stops: tuple[str, ...] = ()

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
    ``split_off``: new slices to list in parallel (older parts of the rest).
    """

    continuation: Slice | None
    split_off: tuple[Slice, ...] = ()


class InconsistentPage(RuntimeError):
    """A page that cannot be continued (``has_more`` with no objects, no id)."""


def after_page(
    s: Slice,
    created: Sequence[int],
    last_id: str | None,
    has_more: bool,
    *,
    new_slices: int,
    min_split_objects: int = 2 * PAGE_SIZE,
) -> PageOutcome:
    """Plan the rest of ``s`` after a page whose objects have ``created`` (newest first).

    ``new_slices`` is how many slices the engine would add (0: none; 1: halve the
    rest; more: cut it in that many + 1 parts, each expected to hold a page at least).
    """
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
    rest = replace(s, lte=oldest, cursor=last_id)
    expected = expected_objects(created, rest)
    if new_slices < 1 or oldest == s.gte or expected < min_split_objects or s.stops:
        return PageOutcome(rest)
    parts = min(new_slices + 1, rest.splittable_seconds, max(2, int(expected // PAGE_SIZE)))
    seconds = rest.splittable_seconds
    # part i covers [gte + i*seconds//parts, gte + (i+1)*seconds//parts - 1]; each has a second
    bounds = [s.gte + i * seconds // parts for i in range(parts + 1)]
    older = tuple(Slice(lo, hi - 1) for lo, hi in itertools.pairwise(bounds[:-1]))
    return PageOutcome(Slice(bounds[-2], oldest, last_id), older)


# objects a planned slice is given: a page, less room for those the caller's counts lack
# (a slice holding 101 costs a second call, with a round trip of its own)
PLANNED_FILL = 96


def plan_from_counts(
    counts: Iterable[tuple[int, int]], per_slice: int = PLANNED_FILL
) -> list[tuple[int, int]]:
    """Seconds in ascending order with their object counts, grouped into runs of at most
    ``per_slice`` objects (a second holding more is a run of its own): ``(first second,
    objects)`` per run, the plan ``planned_slices`` cuts a window by."""
    plan: list[tuple[int, int]] = []
    lo: int | None = None
    n = 0
    for second, count in counts:
        if lo is not None and n + count > per_slice:
            plan.append((lo, n))
            lo, n = None, 0
        if lo is None:
            lo = int(second)
        n += int(count)
    if lo is not None:
        plan.append((lo, n))
    return plan


def planned_slices(
    first: Slice,
    plan: Sequence[tuple[int, int]],
    cuts: Mapping[int, Sequence[str]] | None = None,
) -> list[tuple[Slice, float]]:
    """``first`` cut where ``plan`` says (runs as ``plan_from_counts`` makes them), each
    slice with the objects expected in it. The slices tile ``first`` exactly whatever
    the plan holds: the first slice starts at ``first.gte`` with the runs that start
    there or before, runs that start after ``first`` are dropped, and the last slice
    reaches ``first.lte`` (no slice is spent on a stretch before the first run).

    ``cuts``: for a run that is one crowded second, ids of it about a page apart
    (``cut_ids``): that second becomes one slice from its top and one after each
    cut, all stopping at the cuts (the newer seconds of the run's slice go with the
    one from the top, which lists them first; older ones, only possible for the
    window's first run, are a slice of their own)."""
    if first.gte is None or first.lte is None or first.cursor is not None:
        raise ValueError("only a fresh slice with created bounds can follow a plan")
    # per slice: its first second, the objects expected, and the first second of its
    # own run when that lies in the window (a crowded second its cuts may split)
    parts: list[list[Any]] = []
    previous: int | None = None
    for lo, n in plan:
        if previous is not None and lo <= previous:
            raise ValueError("a plan's runs must be in ascending order of their first second")
        previous = lo
        if lo > first.lte:
            break
        own = int(lo) if lo >= first.gte else None
        if not parts:  # the first run reaches down to the window's start
            parts.append([first.gte, int(n), own])
        elif lo > first.gte:
            parts.append([int(lo), int(n), own])
        else:
            parts[-1][1] += int(n)
            parts[-1][2] = own
    parts = parts or [[first.gte, 0, None]]
    ends = [lo - 1 for lo, _n, _own in parts[1:]] + [first.lte]
    slices: list[tuple[Slice, float]] = []
    for (lo, n, own), hi in zip(parts, ends, strict=True):
        stops = tuple(dict.fromkeys((cuts or {}).get(own, ()))) if own is not None else ()
        if not stops:
            slices.append((Slice(lo, hi), n))
            continue
        if lo < own:
            slices.append((Slice(lo, own - 1), 0))
        share = n / (len(stops) + 1)
        slices.append((Slice(own, hi, None, stops), share))
        slices.extend((Slice(own, own, cut, stops), share) for cut in stops)
    return slices


def cut_ids(
    ids: Sequence[str], per_slice: int = PLANNED_FILL, usable: Sequence[bool] | None = None
) -> tuple[str, ...]:
    """The cuts of a crowded second from its ids in the order Stripe is expected to
    list them: every ``per_slice``-th, so that each run between two is one page.

    ``usable``: which ids may be a cut (a row marked deleted may not: Stripe may no
    longer know it, and a refused cut costs the whole second again); where the
    ``per_slice``-th is not, the last usable one before it is the cut."""
    cuts: list[str] = []
    last_cut = last_usable = -1
    for i in range(len(ids) - 1):  # a cut at the very end would start an empty slice
        if usable is None or usable[i]:
            last_usable = i
        if i - last_cut >= per_slice and last_usable > last_cut:
            cuts.append(ids[last_usable])
            last_cut = last_usable
    return tuple(cuts)


def stop_at(s: Slice, ids: Sequence[str]) -> int | None:
    """Where a page of ``s`` ends it: the position of the first of its stops listed."""
    if not s.stops:
        return None
    stops = set(s.stops)
    return next((i for i, object_id in enumerate(ids) if object_id in stops), None)


def expected_objects(created: Sequence[int], rest: Slice) -> float:
    """Objects expected in ``rest`` if it is as dense as the page just read."""
    newest, oldest = int(created[0]), int(created[-1])
    density = len(created) / (newest - oldest + 1)
    return density * rest.splittable_seconds
