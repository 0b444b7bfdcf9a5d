"""Stripe-shaped list data for tests and benchmarks: a million objects in a few bytes each.

An object is an index into a resource's sorted array of creation times: its id, its
customer, its status and its JSON are all derived from the index, so 1,000,000
objects cost 8 MB (one int64 each), and a page is rendered only when it is asked for.

Listing follows Stripe (docs.stripe.com/api/pagination): newest first (``created``
descending, then id descending within a second), ``limit`` 1-100 (default 10),
``created[gte|gt|lte|lt]`` (or ``created=<t>``), opaque cursors ``starting_after`` /
``ending_before``, and subscriptions hide ``canceled`` ones unless ``status=all`` (or
``status=canceled``). Payment methods list per customer
(``/v1/customers/{id}/payment_methods``), with no ``created`` filter.

``page_indexes`` is pure (no I/O): the in-process fake of the property tests and the
HTTP fake (``fake_stripe_server``) share it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES3 = Path(__file__).resolve().parents[1] / "data" / "fixtures3.json"

PREFIXES = {
    "charges": "ch",
    "payment_intents": "pi",
    "refunds": "re",
    "disputes": "dp",
    "subscriptions": "sub",
    "invoices": "in",
    "customers": "cus",
    "payment_methods": "pm",
    "events": "evt",
}
OBJECT_NAMES = {
    "charges": "charge",
    "payment_intents": "payment_intent",
    "refunds": "refund",
    "disputes": "dispute",
    "subscriptions": "subscription",
    "invoices": "invoice",
    "customers": "customer",
    "payment_methods": "payment_method",
    "events": "event",
}
# every fifth subscription is canceled: hidden from GET /v1/subscriptions without status=all
CANCELED_EVERY = 5
DEFAULT_CUSTOMERS = 1000
MAX_LIMIT = 100


class ListError(ValueError):
    """A request Stripe would answer 400 (bad limit, unknown cursor, bad filter)."""


@dataclass
class Resource:
    """One list endpoint's objects: ``created[i]`` is non-decreasing in ``i``.

    Object ``i`` has id ``<prefix>_<tag><i:09d>``; a higher index is newer (or, within
    one second, listed first), so a list is the indexes in descending order.
    """

    name: str
    created: np.ndarray
    tag: str = "f"
    customers: int = DEFAULT_CUSTOMERS
    template: _Template | None = None
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        self.prefix = PREFIXES[self.name]
        self.created = np.asarray(self.created, dtype=np.int64)
        if self.created.size and np.any(np.diff(self.created) < 0):
            raise ValueError("created times must be sorted ascending")
        self._id_re = re.compile(rf"^{self.prefix}_{re.escape(self.tag)}(\d{{9}})$")

    def __len__(self) -> int:
        return int(self.created.size)

    def object_id(self, i: int) -> str:
        return f"{self.prefix}_{self.tag}{i:09d}"

    def index_of(self, object_id: str) -> int | None:
        m = self._id_re.match(object_id)
        if m is None:
            return None
        i = int(m.group(1))
        return i if i < len(self) else None

    def canceled(self, i: int) -> bool:
        return self.name == "subscriptions" and i % CANCELED_EVERY == 0

    def customer_of(self, i: int) -> int:
        return i % self.customers

    def as_dict(self, i: int) -> dict[str, Any]:
        """The object as a small dict (the in-process fake's answer)."""
        obj: dict[str, Any] = {
            "id": self.object_id(i),
            "object": OBJECT_NAMES[self.name],
            "created": int(self.created[i]),
            "livemode": False,
        }
        if self.name == "subscriptions":
            obj["status"] = "canceled" if self.canceled(i) else "active"
        if self.name in (
            "charges",
            "payment_intents",
            "subscriptions",
            "invoices",
            "payment_methods",
        ):
            obj["customer"] = f"cus_{self.tag}{self.customer_of(i):09d}"
        return obj

    def render(self, i: int) -> bytes:
        """The object's JSON: the resource's fixture with this object's values."""
        if self.template is None:
            return json.dumps(self.as_dict(i), separators=(",", ":")).encode()
        return self.template.render(self.as_dict(i))


class _Template:
    """A fixture object serialized once, with holes for id, created, customer and status."""

    FIELDS = ("id", "created", "customer", "status")

    def __init__(self, fixture: dict[str, Any]) -> None:
        doc = dict(fixture)
        doc["livemode"] = False
        holes = [f for f in self.FIELDS if f in doc or f in ("id", "created")]
        self.defaults = {f: doc.get(f) for f in holes}
        for f in holes:
            doc[f] = f"@@{f}@@"
        text = json.dumps(doc, separators=(",", ":"))
        pattern = "|".join(re.escape(f'"@@{f}@@"') for f in holes)
        self.parts = [p.encode() for p in re.split(pattern, text)]
        self.order = [m.group(0)[3:-3] for m in re.finditer(pattern, text)]

    def render(self, values: Mapping[str, Any]) -> bytes:
        out = [self.parts[0]]
        for name, part in zip(self.order, self.parts[1:], strict=True):
            out.append(json.dumps(values.get(name, self.defaults[name])).encode())
            out.append(part)
        return b"".join(out)


def load_templates(path: Path = FIXTURES3) -> dict[str, _Template]:
    """One realistic template per resource, from Stripe's own example objects."""
    fixtures = json.loads(path.read_text())["resources"]
    return {name: _Template(fixtures[obj]) for name, obj in OBJECT_NAMES.items() if obj in fixtures}


# --- creation-time distributions --------------------------------------------------------


def creation_times(n: int, kind: str, start: int, end: int, seed: int = 0) -> np.ndarray:
    """``n`` sorted creation times in ``[start, end]``.

    ``uniform``: spread evenly at random. ``skewed``: 30 % inside one burst day, 500
    in a single second, the rest uniform (the issue's shape of real accounts).
    """
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        times = rng.integers(start, end + 1, n, dtype=np.int64)
    elif kind == "skewed":
        one_second = min(500, n)
        burst = min(int(n * 0.3), n - one_second)
        rest = n - one_second - burst
        burst_day = start + int((end - start) * 0.6)
        times = np.concatenate(
            [
                np.full(one_second, start + int((end - start) * 0.25), dtype=np.int64),
                rng.integers(burst_day, min(end, burst_day + 86_399) + 1, burst, dtype=np.int64),
                rng.integers(start, end + 1, rest, dtype=np.int64),
            ]
        )
    else:
        raise ValueError(f"unknown distribution {kind!r}")
    times.sort()
    return times


@dataclass
class DataSet:
    """Several resources, as one fake Stripe account holds them."""

    resources: dict[str, Resource]

    @classmethod
    def generate(
        cls,
        counts: Mapping[str, int],
        *,
        kind: str = "uniform",
        start: int = 1_700_000_000,
        end: int = 1_700_000_000 + 90 * 86_400,
        seed: int = 0,
        templates: Mapping[str, _Template] | None = None,
        customers: int = DEFAULT_CUSTOMERS,
    ) -> DataSet:
        resources = {}
        for offset, (name, n) in enumerate(sorted(counts.items())):
            resources[name] = Resource(
                name,
                creation_times(n, kind, start, end, seed + offset),
                customers=customers,
                template=(templates or {}).get(name),
            )
        return cls(resources)

    def total(self) -> int:
        return sum(len(r) for r in self.resources.values())

    def visible_ids(self, name: str, *, status_all: bool = True) -> set[str]:
        """Every id a complete listing must return (tests compare against it)."""
        r = self.resources[name]
        return {r.object_id(i) for i in range(len(r)) if status_all or not r.canceled(i)}


# --- listing (pure) ----------------------------------------------------------------------


def _int_param(query: Mapping[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ListError(f"Invalid integer: {key}={raw!r}") from None


def _index_range(r: Resource, query: Mapping[str, str]) -> tuple[int, int]:
    """Indexes ``[lo, hi)`` whose ``created`` passes the ``created`` filters."""
    lo, hi = 0, len(r)
    exact = _int_param(query, "created")
    bounds = {op: _int_param(query, f"created[{op}]") for op in ("gte", "gt", "lte", "lt")}
    if exact is not None:
        bounds["gte"] = bounds["lte"] = exact
    if bounds["gte"] is not None:
        lo = max(lo, int(np.searchsorted(r.created, bounds["gte"], "left")))
    if bounds["gt"] is not None:
        lo = max(lo, int(np.searchsorted(r.created, bounds["gt"], "right")))
    if bounds["lte"] is not None:
        hi = min(hi, int(np.searchsorted(r.created, bounds["lte"], "right")))
    if bounds["lt"] is not None:
        hi = min(hi, int(np.searchsorted(r.created, bounds["lt"], "left")))
    return lo, max(lo, hi)


def page_indexes(
    r: Resource, query: Mapping[str, str], *, customer: int | None = None
) -> tuple[list[int], bool]:
    """The indexes of one list page, newest first, and ``has_more``.

    ``customer`` restricts to one customer's objects (the per-customer listing of
    payment methods), where Stripe has no ``created`` filter.
    """
    limit = _int_param(query, "limit")
    limit = 10 if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise ListError(f"Invalid limit: must be between 1 and {MAX_LIMIT}")
    if customer is not None and any(k.startswith("created") for k in query):
        raise ListError("Received unknown parameter: created")
    lo, hi = _index_range(r, query) if customer is None else (0, len(r))
    status = query.get("status")
    hide_canceled = r.name == "subscriptions" and status is None
    only = status if r.name == "subscriptions" and status not in (None, "all") else None

    def visible(i: int) -> bool:
        if hide_canceled and r.canceled(i):
            return False
        if only is not None and ("canceled" if r.canceled(i) else "active") != only:
            return False
        return customer is None or r.customer_of(i) == customer

    after, before = query.get("starting_after"), query.get("ending_before")
    if after is not None and before is not None:
        raise ListError(
            "You may only specify one of these parameters: ending_before, starting_after."
        )
    step = r.customers if customer is not None else 1
    if before is not None:
        k = _cursor(r, before)
        out = list(
            islice_visible(_ascending(max(lo, k + 1), hi, step, customer, r), visible, limit + 1)
        )
        has_more = len(out) > limit
        return sorted(out[:limit], reverse=True), has_more
    if after is not None:
        hi = min(hi, _cursor(r, after))
    out = list(islice_visible(_descending(lo, hi, step, customer, r), visible, limit + 1))
    return out[:limit], len(out) > limit


def _cursor(r: Resource, object_id: str) -> int:
    k = r.index_of(object_id)
    if k is None:
        raise ListError(f"No such {OBJECT_NAMES[r.name]}: '{object_id}'")
    return k


def _descending(lo: int, hi: int, step: int, customer: int | None, r: Resource) -> Iterator[int]:
    top = hi - 1
    if customer is not None and top >= 0:
        top -= (top - customer) % r.customers
    return iter(range(top, lo - 1, -step))


def _ascending(lo: int, hi: int, step: int, customer: int | None, r: Resource) -> Iterator[int]:
    first = lo
    if customer is not None:
        first += (customer - lo) % r.customers
    return iter(range(first, hi, step))


def islice_visible(indexes: Iterator[int], visible: Any, n: int) -> Iterator[int]:
    taken = 0
    for i in indexes:
        if visible(i):
            yield i
            taken += 1
            if taken >= n:
                return


def resolve_path(data: DataSet, path: str) -> tuple[Resource, int | None]:
    """``/v1/charges`` or ``/v1/customers/cus_x/payment_methods`` -> (resource, customer)."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "v1" and parts[1] in data.resources:
        return data.resources[parts[1]], None
    if len(parts) == 4 and parts[:2] == ["v1", "customers"] and parts[3] == "payment_methods":
        pms = data.resources.get("payment_methods")
        customers = data.resources.get("customers")
        k = customers.index_of(parts[2]) if customers is not None else None
        if pms is None or k is None:
            raise LookupError(f"No such customer: '{parts[2]}'")
        return pms, k
    raise LookupError(f"Unrecognized request URL (GET: {path})")


def list_page(data: DataSet, path: str, query: Mapping[str, str]) -> dict[str, Any]:
    """A Stripe list page as a dict (the in-process fake, no HTTP)."""
    r, customer = resolve_path(data, path)
    indexes, has_more = page_indexes(r, query, customer=customer)
    return {
        "object": "list",
        "url": path,
        "has_more": has_more,
        "data": [r.as_dict(i) for i in indexes],
    }


def render_page(data: DataSet, path: str, query: Mapping[str, str]) -> bytes:
    """The same page as the JSON body the HTTP fake sends (objects from their templates)."""
    r, customer = resolve_path(data, path)
    indexes, has_more = page_indexes(r, query, customer=customer)
    head = json.dumps({"object": "list", "url": path, "has_more": has_more})[:-1]
    return b"".join([head.encode(), b',"data":[', b",".join(r.render(i) for i in indexes), b"]}"])
