"""Parallel time-sliced listing: planning, exactly-once, retries, bounded memory, resume.

The Stripe peer here is the in-process fake of ``tests/support/fake_stripe_data.py``
(Stripe's list semantics: newest first, created filters, cursors, ``status=all``),
called directly instead of over HTTP so that hypothesis can try hundreds of
distributions quickly; ``test_listing_http.py`` runs the real client over HTTP.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import stripe
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stripe_pipeline.stripe_api.client import encode_params
from stripe_pipeline.stripe_api.listing import (
    DatabaseListingProgress,
    ListingFailed,
    ListingRequest,
    MemoryListingProgress,
    SlicedLister,
    SliceRecord,
)
from stripe_pipeline.stripe_api.slicing import (
    STRIPE_EPOCH,
    InconsistentPage,
    PageOutcome,
    Slice,
    after_page,
    cut_ids,
    first_slice,
    page_params,
    plan_from_counts,
    planned_slices,
    stop_at,
)
from tests.support.fake_stripe_data import DataSet, ListError, Resource, list_page

START, END = 1_700_000_000, 1_700_000_000 + 10 * 86_400


class FakeApi:
    """``fetch_page`` against the in-process fake, with injectable transient failures.

    An unknown ``starting_after`` is refused with a 400 as Stripe does, or, with
    ``unknown_cursor_from_top``, ignored as localstripe does (it lists from the top)."""

    def __init__(
        self, data: DataSet, *, fail_every: int = 0, unknown_cursor_from_top: bool = False
    ) -> None:
        self.data = data
        self.fail_every = fail_every
        self.unknown_cursor_from_top = unknown_cursor_from_top
        self.requests = 0
        self.queries: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def __call__(self, path: str, params: dict) -> dict:
        query = dict(encode_params(params))
        with self._lock:
            self.requests += 1
            self.queries.append((path, query))
            fail = self.fail_every and self.requests % self.fail_every == 0
        if fail:
            raise stripe.APIConnectionError("injected connection reset", should_retry=True)
        try:
            return list_page(self.data, path, query)
        except ListError as exc:
            if self.unknown_cursor_from_top and "starting_after" in query:
                top = {k: v for k, v in query.items() if k != "starting_after"}
                return list_page(self.data, path, top)
            raise stripe.InvalidRequestError(str(exc), "starting_after", http_status=400) from exc


def lister(api: FakeApi, **options) -> SlicedLister:
    options.setdefault("workers", 4)
    options.setdefault("max_slices_per_listing", 6)
    return SlicedLister(api, sleep=lambda _s: None, **options)


def charges(times: list[int]) -> DataSet:
    return DataSet({"charges": Resource("charges", np.sort(np.array(times, dtype=np.int64)))})


def ids_in_window(data: DataSet, name: str, start: int, end: int) -> Counter:
    r = data.resources[name]
    return Counter(r.object_id(i) for i in range(len(r)) if start <= r.created[i] <= end)


# --- planning (pure) ---------------------------------------------------------------------


def test_first_slice_and_params_pass_through() -> None:
    s = first_slice(10, 20)
    assert s == Slice(10, 20)
    assert page_params(s, {"status": "all", "expand": ["data.customer"]}) == {
        "status": "all",
        "expand": ["data.customer"],
        "limit": 100,
        "created": {"gte": 10, "lte": 20},
    }
    assert first_slice(None, START).gte == STRIPE_EPOCH
    assert first_slice(None, None, created_filter=False) == Slice(None, None)
    with pytest.raises(ValueError):
        first_slice(30, 20)
    with pytest.raises(ValueError):
        page_params(s, {"created": {"gte": 1}})  # the window belongs to the lister


def test_listing_keys_name_the_request_and_stay_short() -> None:
    request = ListingRequest.resource("subscriptions", 1, 2, params={"status": "all"})
    assert request.listing_key == "/v1/subscriptions?status=all created[1,2]"
    huge = ListingRequest("/v1/charges", 1, 2, {"expand": [f"data.f{i}" for i in range(200)]})
    other = ListingRequest("/v1/charges", 1, 2, {"expand": [f"data.f{i}" for i in range(201)]})
    assert len(huge.listing_key) <= 500 and huge.listing_key != other.listing_key


def test_a_last_page_ends_the_slice() -> None:
    assert after_page(Slice(0, 100), [90, 80], "ch_2", False, new_slices=1).continuation is None


def test_a_dense_page_splits_the_rest_in_two_by_time() -> None:
    created = list(range(1000, 900, -1))  # 100 objects in 100 s; 900 s left below
    out = after_page(Slice(0, 1000), created, "ch_x", True, new_slices=1)
    assert out.continuation == Slice(451, 901, "ch_x")  # keeps the cursor and second 901
    assert out.split_off == (Slice(0, 450),)


def test_no_split_when_the_rest_is_small_or_one_second_or_not_allowed() -> None:
    created = list(range(1000, 900, -1))
    sparse_rest = Slice(850, 1000)  # ~50 objects expected below: page on instead
    assert after_page(sparse_rest, created, "c", True, new_slices=1).split_off == ()
    same_second = [500] * 100
    out = after_page(Slice(500, 900), same_second, "c", True, new_slices=1)
    assert out == type(out)(Slice(500, 500, "c"))  # one second: the cursor alone
    assert after_page(Slice(0, 1000), created, "c", True, new_slices=0).split_off == ()


def test_a_first_page_may_fan_out_into_parts_that_each_expect_a_page() -> None:
    created = list(range(1000, 900, -1))  # 900 objects expected in [0, 901]
    out = after_page(Slice(0, 1000), created, "c", True, new_slices=20)
    parts = [*out.split_off, out.continuation]
    assert len(parts) == 9  # at most one part per expected page
    assert parts[0].gte == 0 and parts[-1] == Slice(parts[-1].gte, 901, "c")
    assert all(a.lte + 1 == b.gte for a, b in pairwise(parts))


def test_inconsistent_pages_are_refused() -> None:
    with pytest.raises(InconsistentPage):
        after_page(Slice(0, 10), [], None, True, new_slices=1)
    with pytest.raises(InconsistentPage):
        after_page(Slice(0, 10), [50], "c", True, new_slices=1)  # outside the slice


def test_a_plan_groups_seconds_into_pages_and_a_crowded_second_alone() -> None:
    counts = [(10, 40), (11, 40), (12, 30), (20, 500), (21, 1), (30, 96), (31, 2)]
    assert plan_from_counts(counts, per_slice=96) == [
        (10, 80),  # 80 + 30 would pass 96: the next run starts at 12
        (12, 30),
        (20, 500),  # more than a page in one second: a run of its own
        (21, 1),
        (30, 96),
        (31, 2),
    ]
    assert plan_from_counts([]) == []


def test_planned_slices_tile_the_window_whatever_the_plan() -> None:
    plan = [(5, 7), (12, 30), (20, 500), (21, 1), (99, 4), (150, 9)]
    parts = planned_slices(Slice(10, 100), plan)
    assert [s for s, _n in parts] == [
        Slice(10, 11),  # the run starting before the window joins its first slice
        Slice(12, 19),
        Slice(20, 20),
        Slice(21, 98),
        Slice(99, 100),  # the last slice reaches the window's end; runs past it go
    ]
    assert [n for _s, n in parts] == [7, 30, 500, 1, 4]
    assert planned_slices(Slice(10, 100), []) == [(Slice(10, 100), 0)]
    # the first run reaches down to the window's start, the last up to its end
    assert planned_slices(Slice(10, 100), [(50, 3), (60, 4)]) == [
        (Slice(10, 59), 3),
        (Slice(60, 100), 4),
    ]
    with pytest.raises(ValueError):
        planned_slices(Slice(10, 100), [(50, 1), (20, 1)])  # not in order
    with pytest.raises(ValueError):
        planned_slices(Slice(10, 100), [(5, 1), (5, 1)])
    with pytest.raises(ValueError):
        planned_slices(Slice(10, 100, "ch_1"), plan)  # a slice paged into already


def test_a_crowded_second_is_cut_by_ids_into_slices_that_end_at_each_others_cut() -> None:
    ids = [f"ch_{i:03d}" for i in range(250, 0, -1)]  # one second's ids, as listed
    cuts = cut_ids(ids, per_slice=96)
    assert cuts == (ids[95], ids[191])  # runs of 96, 96 and 58
    assert cut_ids(ids[:96]) == () and cut_ids(ids[:192]) == (ids[95],)  # no empty run
    usable = [i not in (95, 96) for i in range(250)]  # rows marked deleted are no cut
    assert cut_ids(ids, 96, usable) == (ids[94], ids[190])
    assert cut_ids(ids, 96, [False] * 250) == ()
    plan = [(5, 7), (20, 250), (40, 3)]
    parts = planned_slices(Slice(10, 100), plan, {20: cuts})
    assert parts == [
        (Slice(10, 19), 7),
        (Slice(20, 39, None, cuts), 250 / 3),  # from the top, with the newer seconds
        (Slice(20, 20, cuts[0], cuts), 250 / 3),  # after each cut, to the next one
        (Slice(20, 20, cuts[1], cuts), 250 / 3),
        (Slice(40, 100), 3),
    ]
    # the window's first run: the older seconds below it are a slice of their own
    first = planned_slices(Slice(10, 100), [(20, 250)], {20: cuts})
    assert [s for s, _n in first[:2]] == [Slice(10, 19), Slice(20, 100, None, cuts)]
    # cuts of a second that is not a run's own are not used
    assert planned_slices(Slice(10, 100), plan, {21: cuts}) == planned_slices(Slice(10, 100), plan)
    # a page ends its slice at the first cut it lists, the cut included
    assert stop_at(Slice(20, 20, None, cuts), [ids[94], ids[95], ids[96]]) == 1
    assert stop_at(Slice(20, 20, None, cuts), ids[:95]) is None
    assert stop_at(Slice(20, 20), ids) is None
    # such a slice pages on with its stops and is never split
    dense = [39] * 100
    assert after_page(Slice(20, 39, None, cuts), dense, "x", True, new_slices=4) == PageOutcome(
        Slice(20, 39, "x", cuts)
    )


# --- exactly once, whatever the distribution ---------------------------------------------


@st.composite
def creation_times(draw) -> list[int]:
    n = draw(st.sampled_from([0, 1, 99, 100, 101, 199, 200, 201, 450]) | st.integers(0, 600))
    shape = draw(st.sampled_from(["uniform", "one_second", "bursts", "edges", "outside"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if shape == "uniform":
        times = rng.integers(START, END + 1, n)
    elif shape == "one_second":
        times = np.full(n, draw(st.integers(START, END)))
    elif shape == "bursts":
        centers = rng.integers(START, END + 1, draw(st.integers(1, 4)))
        times = np.clip(rng.choice(centers, n) + rng.integers(0, 3, n), START, END)
    elif shape == "edges":
        times = rng.choice(np.array([START, START + 1, END - 1, END]), n)
    else:  # objects outside the window must not be listed
        times = rng.integers(START - 5_000, END + 5_000, n)
    return [int(t) for t in times]


def hinted_plan(times: list[int], hint: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A plan from counts that are right, or wrong as a local table's can be."""
    if hint == "none":
        return []
    sample = np.array(times, dtype=np.int64)
    if hint == "partial":  # the table lacks some objects and has others Stripe has not
        kept = sample[rng.random(len(sample)) < 0.7]
        sample = np.concatenate([kept, rng.integers(START - 100, END + 100, len(sample) // 5)])
    elif hint == "foreign":  # counts that have nothing to do with the objects
        sample = rng.integers(START - 1_000, END + 1_000, rng.integers(0, 400))
    seconds, counts = np.unique(np.sort(sample), return_counts=True)
    return plan_from_counts(zip(seconds.tolist(), counts.tolist(), strict=True))


def hinted_cuts(
    data: DataSet, hint: str, rng: np.random.Generator
) -> list[tuple[int, tuple[str, ...]]]:
    """Cuts of the crowded seconds: right (ids in the order the fake lists them), or
    wrong as a local table's can be: ids Stripe has not, ids of other seconds, shuffled."""
    r = data.resources["charges"]
    seconds, counts = np.unique(r.created, return_counts=True)
    crowded = [int(t) for t, n in zip(seconds, counts, strict=True) if n > 96]
    if hint == "none" or not crowded:
        return []
    out = []
    for second in crowded:
        ids = sorted((r.object_id(i) for i in np.flatnonzero(r.created == second)), reverse=True)
        cuts = list(cut_ids(ids))
        if hint in ("partial", "foreign"):
            for k in range(len(cuts)):
                if rng.random() < (0.5 if hint == "partial" else 1.0):
                    other = r.object_id(int(rng.integers(len(r))))  # any second's id
                    cuts[k] = str(rng.choice([f"ch_gone{k}", other]))
            rng.shuffle(cuts)
        out.append((second, tuple(cuts)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    times=creation_times(),
    fail_every=st.sampled_from([0, 0, 3, 7]),
    hint=st.sampled_from(["none", "none", "exact", "partial", "foreign"]),
    from_top=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@example(times=[START] * 500, fail_every=0, hint="none", from_top=False, seed=0)
@example(times=[START] * 500, fail_every=0, hint="exact", from_top=False, seed=0)
@example(times=[START] * 500, fail_every=3, hint="partial", from_top=False, seed=1)
@example(times=[START] * 500, fail_every=0, hint="foreign", from_top=True, seed=2)
@example(times=[], fail_every=0, hint="none", from_top=False, seed=0)
@example(times=[END] * 101, fail_every=2, hint="none", from_top=False, seed=0)
def test_every_object_is_listed_exactly_once(
    times: list[int], fail_every: int, hint: str, from_top: bool, seed: int
) -> None:
    """Whatever the distribution, the failures, and the plan the caller hints (none,
    right, partly wrong, or unrelated to the objects), with its cuts of crowded seconds
    refused (Stripe) or ignored (localstripe) where Stripe has no such id."""
    data = charges(times)
    api = FakeApi(data, fail_every=fail_every, unknown_cursor_from_top=from_top)
    lst = lister(api)
    rng = np.random.default_rng(seed)
    plan = hinted_plan(times, hint, rng)
    cuts = hinted_cuts(data, hint, rng)
    listed: Counter = Counter()
    covered: list[tuple[int, int]] = []
    request = ListingRequest.resource("charges", START, END, plan=plan, cuts=cuts)
    for page in lst.pages([request]):
        listed.update(o["id"] for o in page.objects)
        assert page.covered is None or page.final
        if page.covered is not None:  # a range said whole holds nothing still to come
            gte, lte = page.covered
            assert ids_in_window(data, "charges", gte, lte).keys() <= listed.keys()
            covered.append(page.covered)
    assert listed == ids_in_window(data, "charges", START, END)
    # the slices' ranges are disjoint and tile the window
    covered.sort()
    assert covered[0][0] == START and covered[-1][1] == END
    assert all(a[1] + 1 == b[0] for a, b in pairwise(covered))
    n = sum(listed.values())
    stats = lst.stats
    assert stats.objects == n
    # each split costs at most one call (the first page's fan-out, one per part), each
    # planned slice one more (a page that may be empty or partial); a crowded second
    # whose cuts fail is listed again whole, once, after an answer per refused cut
    parts = planned_slices(Slice(START, END), plan, dict(cuts)) if plan else [None]
    # (refused), or from its top by each such slice (ignored: a peer like localstripe)
    created = data.resources["charges"].created
    wasted = sum((len(c) + 1) * (int(np.sum(created == second)) // 100 + 2) for second, c in cuts)
    least = 2 * (n // 100) + lst.start_credits + len(parts)
    assert stats.pages <= least + (wasted if hint != "exact" else 0)
    assert stats.calls == stats.pages + stats.retries


def test_skewed_data_stays_within_twice_the_minimum_and_splits() -> None:
    times = [START + 3600] * 500 + list(range(START, START + 20_000, 7)) * 3
    data = charges(times)
    lst = lister(FakeApi(data), workers=8, max_slices_per_listing=8)
    listed = Counter(o["id"] for o in lst.list("charges", START, END))
    assert listed == ids_in_window(data, "charges", START, END)
    n = len(listed)
    assert lst.stats.splits > 0
    assert lst.stats.pages <= 2 * (n // 100) + lst.start_credits + 1


def test_uniform_data_costs_close_to_the_minimum() -> None:
    data = charges([int(t) for t in np.random.default_rng(1).integers(START, END, 30_000)])
    lst = lister(FakeApi(data), workers=8, max_slices_per_listing=8)
    assert sum(1 for _ in lst.list("charges", START, END)) == 30_000
    assert lst.stats.pages <= 1.1 * 300
    assert lst.stats.slices >= 8  # it did go parallel


def test_a_right_plan_lists_a_page_per_slice_from_the_first_call() -> None:
    """Every slice as planned, one page each (a crowded second too: a slice after each
    of its cuts, none paged on), none split, and the first calls out before any answer
    came back."""
    times = [int(t) for t in np.random.default_rng(2).integers(START, END, 30_000)]
    times += [START + 3600] * 500  # a crowded second
    data = charges(times)
    plan = hinted_plan(times, "exact", np.random.default_rng(0))
    cuts = hinted_cuts(data, "exact", np.random.default_rng(0))
    assert [second for second, _ids in cuts] == [START + 3600]
    api = _SlowApi(data, {"/v1/charges": 0.01})
    lst = lister(api, workers=8, max_slices_per_listing=8)
    request = ListingRequest.resource("charges", START, END, plan=plan, cuts=cuts)
    pages = list(lst.pages([request]))
    assert Counter(o["id"] for p in pages for o in p.objects) == ids_in_window(
        data, "charges", START, END
    )
    stats = lst.stats
    parts = planned_slices(Slice(START, END), plan, dict(cuts))
    assert len(parts) == len(plan) + 5  # the crowded second in six runs of at most 96
    assert stats.splits == 0 and stats.slices == len(parts)  # every slice as planned
    assert stats.pages == len(parts)  # one page each
    assert stats.pages <= 1.05 * 305
    # no page of the crowded second waited for another: each went out after a cut
    cursors = {q["starting_after"] for _p, q in api.queries if "starting_after" in q}
    assert cursors == set(cuts[0][1])
    # the crowded second is said whole once, by the last of its slices
    said = [p.covered for p in pages if p.covered and p.covered[0] <= START + 3600 <= p.covered[1]]
    assert len(said) == 1
    # the first calls all went out at once, before any answer came back
    assert api.peak["/v1/charges"] >= 8


def test_many_resources_params_and_per_customer_listings_at_once() -> None:
    data = DataSet.generate(
        {"subscriptions": 730, "customers": 7, "payment_methods": 260, "charges": 1234},
        start=START,
        end=END,
        customers=7,
    )
    api = FakeApi(data)
    requests = [
        ListingRequest.resource("subscriptions", START, END, params={"status": "all"}),
        ListingRequest.resource("charges", START, END),
        *(
            ListingRequest(
                f"/v1/customers/cus_f{c:09d}/payment_methods",
                params={"type": "card"},
                created_filter=False,
            )
            for c in range(7)
        ),
    ]
    got: dict[str, Counter] = {}
    for key, obj in lister(api).list_many(requests):
        got.setdefault(key.split("?")[0].split(" ")[0], Counter())[obj["id"]] += 1
    assert got["/v1/subscriptions"] == Counter(data.visible_ids("subscriptions"))
    assert got["/v1/charges"] == Counter(data.visible_ids("charges"))
    pms = Counter()
    for c in range(7):
        pms.update(got.get(f"/v1/customers/cus_f{c:09d}/payment_methods", Counter()))
    assert pms == Counter(data.visible_ids("payment_methods"))
    assert all("created[gte]" not in q for p, q in api.queries if "/customers/" in p)
    assert all(q.get("type") == "card" for p, q in api.queries if "/customers/" in p)
    # without status=all the canceled subscriptions are not listed (Stripe's default)
    hidden = set(data.visible_ids("subscriptions")) - data.visible_ids(
        "subscriptions", status_all=False
    )
    default = {o["id"] for o in lister(FakeApi(data)).list("subscriptions", START, END)}
    assert hidden and not (default & hidden)


def test_a_server_that_ignores_the_created_filter_is_refused() -> None:
    data = charges(list(range(START - 500, START + 500)))

    def ignoring(path: str, params: dict) -> dict:
        query = {k: v for k, v in encode_params(params) if not k.startswith("created")}
        return list_page(data, path, query)

    with pytest.raises(InconsistentPage):
        list(SlicedLister(ignoring, workers=2).list("charges", START, START + 100))


def test_a_slice_that_keeps_failing_ends_the_listing() -> None:
    def broken(path: str, params: dict) -> dict:
        raise stripe.APIConnectionError("down", should_retry=True)

    lst = SlicedLister(broken, workers=2, max_attempts=3, sleep=lambda _s: None)
    with pytest.raises(ListingFailed) as failed:
        list(lst.list("charges", START, END))
    assert isinstance(failed.value.__cause__, stripe.APIConnectionError)
    assert lst.stats.calls == 3 and lst.stats.retries == 2


def test_a_client_error_is_not_retried() -> None:
    def bad(path: str, params: dict) -> dict:
        raise stripe.InvalidRequestError("No such parameter", "foo", http_status=400)

    lst = SlicedLister(bad, workers=2, sleep=lambda _s: None)
    with pytest.raises(ListingFailed):
        list(lst.list("charges", START, END))
    assert lst.stats.calls == 1


def test_a_slow_consumer_holds_the_fetchers_back() -> None:
    data = charges([int(t) for t in np.random.default_rng(2).integers(START, END, 20_000)])
    fetched = consumed = peak = 0
    lock = threading.Lock()
    api = FakeApi(data)

    def counting(path: str, params: dict) -> dict:
        nonlocal fetched, peak
        page = api(path, params)
        with lock:
            fetched += 1
            peak = max(peak, fetched - consumed)
        return page

    lst = SlicedLister(counting, workers=16, max_slices_per_listing=8, max_live_slices=8)
    slow = threading.Event()
    for _page in lst.pages([ListingRequest.resource("charges", START, END)]):
        slow.wait(0.002)  # a consumer slower than the fetchers
        with lock:
            consumed += 1
    assert consumed == lst.stats.pages >= 200
    # one page per live slice waiting for the consumer, plus the one it holds
    assert peak <= 8 + 1


def test_refused_cuts_leave_the_listings_share_of_the_work_right(monkeypatch) -> None:
    """White-box: a slice whose cut is refused gives back what it was expected to
    hold, whether it lists the second again or ends, so the listing's share of the
    workers (``remaining``) goes back to nothing when it is done."""
    times = [START + 50] * 500 + list(range(START, START + 5_000, 13))
    data = charges(times)
    plan = hinted_plan(times, "exact", np.random.default_rng(0))
    cuts = [(START + 50, ("ch_gone1", "ch_gone2", data.resources["charges"].object_id(400)))]
    listings = set()
    plan_page = SlicedLister._plan

    def spy(self, run, task, page):
        listings.add(task.listing)
        return plan_page(self, run, task, page)

    monkeypatch.setattr(SlicedLister, "_plan", spy)
    api = FakeApi(data)
    request = ListingRequest.resource("charges", START, END, plan=plan, cuts=cuts)
    listed = Counter(o["id"] for _key, o in lister(api).list_many([request]))
    assert listed == ids_in_window(data, "charges", START, END)
    assert sum(1 for _p, q in api.queries if q.get("starting_after", "").startswith("ch_gone")) == 2
    (listing,) = listings
    assert listing.remaining == 0 and listing.live == 0


# --- resume ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "planned", ["adaptive", "planned", "crowded"], ids=["adaptive", "planned", "crowded"]
)
def test_a_run_stopped_midway_resumes_from_its_progress(planned: str) -> None:
    """Planned slices are all recorded before the first page: those not started when
    the run died are listed by the next one, which lists without the plan. The slices
    of a crowded second keep their cuts: resumed, each still ends at the next one."""
    times = [int(t) for t in np.random.default_rng(3).integers(START, END, 5_000)]
    if planned == "crowded":
        times += [START + 3600] * 700
    data = charges(times)
    progress = MemoryListingProgress()
    plan = hinted_plan(times, "exact", np.random.default_rng(0)) if planned != "adaptive" else []
    cuts = hinted_cuts(data, "exact", np.random.default_rng(0))
    request = ListingRequest.resource("charges", START, END, plan=plan, cuts=cuts)
    seen: Counter = Counter()
    first = lister(FakeApi(data), progress=progress, run_key="run-1", start_credits=2)
    finals = 0
    for page in first.pages([request]):
        seen.update(o["id"] for o in page.objects)
        first.checkpoint()  # this page is processed: record it now
        finals += page.final
        if finals == 2:
            break  # the run dies once two slices are complete
    done_before = [r for r in progress.load("run-1", request.listing_key) if r.done]
    assert done_before, "some slices completed before the stop"
    records = progress.load("run-1", request.listing_key)
    if planned != "adaptive":  # every planned slice was recorded, most not started
        assert len(records) >= len(plan) > len(done_before) + 20
    if planned == "crowded":  # the crowded second's slices, none done yet, keep their cuts
        crowded = [r for r in records if r.stops]
        assert len(crowded) == 8 and not any(r.done for r in crowded)
    api = FakeApi(data)
    second = lister(api, progress=progress, run_key="run-1")
    for page in second.pages([ListingRequest.resource("charges", START, END)]):
        seen.update(o["id"] for o in page.objects)
        if page.covered is not None:  # a resumed slice says no more than both runs listed
            assert ids_in_window(data, "charges", *page.covered).keys() <= seen.keys()
    assert seen == ids_in_window(data, "charges", START, END)  # each exactly once
    assert second.stats.skipped_slices == len(done_before)
    for _path, query in api.queries:  # completed slices were not listed again
        lo, hi = int(query["created[gte]"]), int(query["created[lte]"])
        assert all(hi < r.gte or lo > r.lte for r in done_before)
    if planned == "crowded":  # and the crowded second cost a page a slice, as planned
        second_pages = [q for _p, q in api.queries if q["created[gte]"] == str(START + 3600)]
        assert len(second_pages) == 8
    # a third run with the same key finds everything done and lists nothing
    third_api = FakeApi(data)
    assert list(lister(third_api, progress=progress, run_key="run-1").pages([request])) == []
    assert third_api.requests == 0
    progress.forget("run-1")
    assert progress.load("run-1", request.listing_key) == []


def test_the_database_keeps_a_slices_cuts(engine) -> None:
    progress = DatabaseListingProgress(engine)
    record = SliceRecord("charges", 3, 20, 20, "ch_2", False, 96, 1, ("ch_2", "ch_5"))
    plain = SliceRecord("charges", 4, 21, 30, None, True, 7, 1)
    progress.save("run", [record, plain])
    assert progress.load("run", "charges") == [record, plain]
    progress.save("run", [SliceRecord("charges", 3, 20, 20, "ch_3", True, 150, 2, ("ch_2",))])
    assert progress.load("run", "charges")[0].stops == ("ch_2",)
    progress.forget("run")


class _SlowApi(FakeApi):
    """The in-process fake with a fixed latency per endpoint (the API's round trip,
    which no in-process peer has), counting each endpoint's calls in flight at once."""

    def __init__(self, data: DataSet, latency: dict[str, float]) -> None:
        super().__init__(data)
        self.latency = latency
        self.in_flight: Counter = Counter()
        self.peak: Counter = Counter()

    def __call__(self, path: str, params: dict) -> dict:
        with self._lock:
            self.in_flight[path] += 1
            self.peak[path] = max(self.peak[path], self.in_flight[path])
        try:
            time.sleep(self.latency[path])
            return super().__call__(path, params)
        finally:
            with self._lock:
                self.in_flight[path] -= 1


def test_with_the_rates_known_slices_follow_each_endpoints_latency() -> None:
    """Pages in flight = rate x latency: at 25 calls/s an endpoint answering in 200 ms
    keeps ~8 slices busy, one answering in 40 ms ~3 (x1.25, +1), whatever the ceiling
    (32 here): a slow endpoint gets the slices it needs, a fast one no partial pages it
    does not."""
    rng = np.random.default_rng(5)
    data = DataSet(
        {
            name: Resource(name, np.sort(rng.integers(START, END, 6_000)))
            for name in ("charges", "refunds")
        }
    )
    api = _SlowApi(data, {"/v1/charges": 0.2, "/v1/refunds": 0.04})
    lst = lister(api, workers=64, max_slices_per_listing=32, rates=(100.0, 25.0))
    requests = [ListingRequest.resource(name, START, END) for name in ("charges", "refunds")]
    assert sum(1 for _ in lst.list_many(requests)) == 12_000
    assert 6 <= api.peak["/v1/charges"] <= 9
    assert 2 <= api.peak["/v1/refunds"] <= 4
