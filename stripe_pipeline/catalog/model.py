"""How a Stripe resource is declared: its table, columns, event routes and listings.

One :class:`Resource` per stored Stripe object says everything the pipeline does with
it, so processing, reconciliation, backfill, erasure and the docs read one place:

- each stored column, its merge policy (how events of any order combine), whether it
  is audited, whether it holds personal data, and whether reconciliation compares it
  (or, when it cannot, why not);
- which event types route to which parser, and which Stripe ``object`` those events
  must carry;
- the list endpoints that state the object (with their parameters, e.g.
  ``status=all``), and the path to fetch one object by id.

Parsers only parse: they turn a Stripe object into :class:`RowWrite` values and never
touch the database. A write is ``versioned`` when its source owns the row's state (a
PaymentIntent event for its payment); an unversioned write only fills what is unknown
and adds monotone facts (a charge event about a PaymentIntent's payment), so it never
overrides what the owning source said, whatever order events arrive in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import BigInteger, Integer, SmallInteger, String, Table

from stripe_pipeline.catalog.sql_readers import Expr


class ParsedEvent(Protocol):
    """The event a parser reads (processing's ``QueuedEvent``, or a listed object
    presented as an event by reconciliation)."""

    @property
    def stripe_event_id(self) -> str: ...

    @property
    def event_type(self) -> str: ...

    @property
    def stripe_created(self) -> int: ...

    @property
    def payload(self) -> dict[str, Any] | None: ...


class Policy(enum.Enum):
    """How events about one object merge into one column, independent of arrival order."""

    NEWEST = "newest"  # the newest event's value, NULL included (status)
    NEWEST_KNOWN = "newest_known"  # the newest non-NULL value; older events fill NULLs
    GREATEST = "greatest"  # monotone: refunded amounts only grow
    LEAST = "least"  # monotone: the first deletion time stays
    FOLLOWS = "follows"  # a fact about another column's value (see ``Resource.follows``)


@dataclass(frozen=True, slots=True)
class Column:
    """One stored column of a resource's table.

    ``reconciled`` False means the Stripe object itself does not state the value (the
    time an event happened, such as a dispute's closing); ``note`` says why, and the
    README's resource table shows it.
    """

    name: str
    policy: Policy
    audit: bool = False
    personal: bool = False
    reconciled: bool = True
    note: str = ""

    def __post_init__(self) -> None:
        if not self.reconciled and not self.note:
            raise ValueError(f"column {self.name}: say why it is not reconciled")


def event_fact(name: str, policy: Policy, note: str, *, audit: bool = False) -> Column:
    """A column that records something about an event, not the object's state."""
    return Column(name, policy, audit=audit, reconciled=False, note=note)


@runtime_checkable
class RefundSource(Protocol):
    """Lists a charge's refunds (every page) as Stripe refund objects.

    Since API version 2022-11-15 ``charge.refunded`` no longer embeds them; the
    rate-limited API client answers, and its errors are the event's (temporary) failure.
    """

    def list_charge_refunds(self, charge_id: str) -> list[dict[str, Any]]: ...


@runtime_checkable
class InvoicePaymentSource(Protocol):
    """Lists the invoice payments of one PaymentIntent as Stripe InvoicePayment objects
    (``GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=``).

    Since API version 2025-03-31.basil a PaymentIntent no longer names its invoice and
    a failed attempt fires no ``invoice_payment.*`` event: the rate-limited API client
    answers, so the link is stored before dunning sees the failure. ``None``: the API
    cannot answer this question (the endpoint is unknown to it); its other errors are
    the event's (temporary) failure.
    """

    def list_payment_intent_invoice_payments(
        self, payment_intent_id: str
    ) -> list[dict[str, Any]] | None: ...


@runtime_checkable
class LineSource(Protocol):
    """Lists every line of an invoice or a credit note (every page of its ``path``,
    ``/v1/invoices/{id}/lines`` or ``/v1/credit_notes/{id}/lines``).

    An event embeds only the first page of lines (``has_more`` says there are more);
    the rate-limited API client answers, and its errors are the event's (temporary)
    failure.
    """

    def list_lines(self, path: str) -> list[dict[str, Any]]: ...


class PeerFailed(Exception):
    """Carries a peer's own exception (the API client behind a refund, invoice payment
    or line lookup) out of parsing, unchanged: processing classifies the cause (a 429
    or an outage is temporary), not the parse."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@runtime_checkable
class ObjectSource(Protocol):
    """Fetches one Stripe object at a ``/v1/...`` path; ``None`` when Stripe answers 404.

    Processing uses it for objects a row names that are not stored yet (a
    subscription's price, a price's product), as sync-engine's "related entities"
    option does: through the rate-limited API client, its errors the event's
    (temporary) failure.
    """

    def fetch_object(self, path: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class RowWrite:
    """What one event (or listed object) says about one row of one table.

    ``versioned`` False: the source does not own the row's state; the write fills
    unknown values and monotone facts only, and never moves the row's event version.
    """

    table: str
    key: str
    values: dict[str, Any]
    versioned: bool = True


@dataclass(slots=True)
class EventContext:
    """A claimed event as parsers see it: its object, time, and the optional peers."""

    event: ParsedEvent
    obj: dict[str, Any]
    refund_source: RefundSource | None = None
    invoice_payment_source: InvoicePaymentSource | None = None
    line_source: LineSource | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def event_type(self) -> str:
        return self.event.event_type

    @property
    def created(self) -> int:
        return self.event.stripe_created

    @property
    def livemode(self) -> bool:
        from stripe_pipeline.catalog.readers import livemode

        return livemode(self.obj, self.event.payload)


Handler = Callable[[EventContext], Iterable[RowWrite]]


@dataclass(frozen=True, eq=False)  # hashed by identity: its SQL is cached
class SqlWrite:
    """One kind of row a parser writes, as SQL over ``o`` (``data.object``) / ``e.payload``.

    ``items``: a JSONB array expression; the write then yields one row per element,
    in order, with the element as ``item`` (a charge's refunds list). ``when``: rows
    are written only where it holds (Python's ``if``). ``defer``: events the twin
    leaves to Python (the parser would call the API, or add a note). ``versioned``:
    SQL for :attr:`RowWrite.versioned`.
    """

    table: str
    key: Expr
    values: Mapping[str, Expr]
    ok: Expr | None = None
    items: str | None = None
    when: str | None = None
    defer: str | None = None
    versioned: str = "true"


@dataclass(frozen=True, eq=False)
class Route:
    """Event types (exact, or ``"prefix.*"``) parsed by one handler.

    ``objects``: the ``data.object.object`` values the handler accepts; an event of
    the family carrying another object is a hostile or broken payload and fails alone.
    ``twin``: the same rows as SQL (PostgreSQL reads them in place); empty when the
    parser stays in Python on purpose.

    ``joins``: the route adds rows to events another resource's route owns (an
    invoice event also states the invoice's lines): it names exactly patterns that
    route declares, and the catalog runs both handlers, the owner's first. The
    joined events keep a SQL twin only when every part has one.
    """

    patterns: tuple[str, ...]
    handler: Handler
    objects: frozenset[str]
    twin: tuple[SqlWrite, ...] = ()
    joins: bool = False


def _joined(handlers: tuple[Handler, ...]) -> Handler:
    """One handler that returns the rows of each of ``handlers``, in order."""

    def handle(ctx: EventContext) -> list[RowWrite]:
        return [write for handler in handlers for write in handler(ctx)]

    handle.__name__ = "+".join(h.__name__ for h in handlers)
    return handle


def _join_routes(owner: Route, joiners: tuple[Route, ...], patterns: tuple[str, ...]) -> Route:
    """The route events of ``patterns`` take when ``joiners`` add rows to ``owner``'s."""
    if not joiners:
        return owner
    for joiner in joiners:
        if joiner.objects != owner.objects:
            raise ValueError(f"{joiner.handler.__name__} accepts other objects than its owner")
    parts = (owner, *joiners)
    twin = tuple(w for r in parts for w in r.twin) if all(r.twin for r in parts) else ()
    return Route(patterns, _joined(tuple(r.handler for r in parts)), owner.objects, twin)


@dataclass(frozen=True, slots=True)
class Listing:
    """A list endpoint that states objects of a resource.

    ``read_as``: the event type whose parser reads a listed object (the same parser
    processing uses, so compared and repaired rows are built exactly as event rows).
    ``params``: sent with every page (``status=all``: Stripe hides canceled
    subscriptions otherwise; ``expand``: a list of paths). ``per_customer``: the
    endpoint lists one customer's objects (``/v1/customers/{customer}/payment_methods``).
    ``created_filter``: the endpoint accepts ``created[gte/lte]``. ``states``: which
    listed objects say anything about a row (a failed attempt of a PaymentIntent does
    not). ``owns``: which listed objects own their row's state; one that does not (a PaymentIntent's
    charge) states only the columns in ``refines`` (its refunded amount and card).
    ``embedded``: the endpoint lists other objects that carry this resource's objects
    (Stripe has no discount list; customers, subscriptions and invoices embed their
    discounts): each listed object yields the objects to read, and the listing is
    windowed on the listed (parent) objects' ``created``. ``full``: every run lists
    every object, whatever its window (prices, products and coupons are few, and a
    subscription may name one created years ago).
    ``per_parent``: the endpoint lists one parent object's children (``{id}`` in
    ``path``: ``/v1/invoices/{id}/lines``), see :class:`PerParent`.
    """

    name: str
    path: str
    read_as: str
    params: Mapping[str, Any] = field(default_factory=dict)
    per_customer: bool = False
    created_filter: bool = True
    states: Callable[[dict[str, Any]], bool] | None = None
    owns: Callable[[dict[str, Any]], bool] | None = None
    refines: tuple[str, ...] = ()
    embedded: Callable[[dict[str, Any]], Iterable[dict[str, Any]]] | None = None
    full: bool = False
    per_parent: PerParent | None = None


@dataclass(frozen=True, slots=True)
class PerParent:
    """Children listed per parent object, each parent's list complete (every page).

    The parents of a run are the objects of type ``parent`` it listed or fetched,
    plus the local ones created in its window. ``column``: this table's column that
    holds the parent's id; a local row of a listed parent that the parent's list no
    longer holds is gone from Stripe (as a 404 would say). ``field``: the child
    object's field that names its parent, set to the parent it was listed under
    (credit note lines never carry it, invoice lines only since 2022).

    ``param``: the parent's id goes in this query parameter instead of ``{id}`` in the
    path (``/v1/balance_transactions?payout=po_...``). ``where``: only parents whose
    stored row holds these values are listed (Stripe lists a payout's transactions only
    for automatic payouts it has reconciled).
    """

    parent: str
    column: str
    field: str
    param: str = ""
    where: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fetch:
    """How one object is fetched by id: ``path`` (``{id}`` replaced), read as the
    event type ``read_as``. ``prefix``: only keys starting with it (a legacy charge
    keys its own payment and is fetched as a charge).

    ``parent``: the object has no endpoint of its own and is fetched through the
    object that carries it (a discount through its subscription): ``{parent}`` in
    ``path`` is the stored row's value of that column, the fetch applies only to rows
    where it is set, and ``embedded`` yields the carried objects; the object's
    absence there means Stripe no longer has it (as a 404 would).
    """

    path: str
    read_as: str
    prefix: str = ""
    parent: str = ""
    embedded: Callable[[dict[str, Any]], Iterable[dict[str, Any]]] | None = None

    def url(self, key: str, row: Mapping[str, Any] | None = None) -> str:
        if self.parent:
            if row is None or not row.get(self.parent):
                raise ValueError(f"fetching {key} needs its {self.parent}")
            return self.path.replace("{parent}", str(row[self.parent]))
        return self.path.replace("{id}", key)


@dataclass(frozen=True, slots=True)
class Reference:
    """Objects a row names that must be stored too, so joins have no holes (a
    subscription's prices and products, a discount's coupon).

    ``ids`` reads the referenced ids from the row's values. Processing fetches a
    referenced object that is neither stored nor written by the same batch through
    its :class:`Fetch` (an :class:`ObjectSource`), or notes it; the nightly run lists
    the referenced resource either way.
    """

    object_type: str
    ids: Callable[[Mapping[str, Any]], Iterable[str | None]]


@dataclass(frozen=True, slots=True)
class Link:
    """A column of another resource's rows that this resource's rows decide.

    Since API version 2025-03-31.basil neither an invoice nor a PaymentIntent names the
    other; invoice payments do. The ``target`` resource's ``column`` gets ``value`` of
    the preferred row of this resource whose ``match`` columns (any of them) hold the
    target's key, whatever order the rows arrive in; a target with no such row keeps
    what its own events say. Preferred: the rows with ``prefer``'s (column, value)
    pairs first, in order, then the newest ``stripe_created``, then the greatest key.
    Only rows with a ``value`` count, so a link never erases a known value.
    """

    target: str  # object type of the resource whose column is filled
    column: str
    value: str
    match: tuple[str, ...]
    prefer: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, eq=False)  # hashed by identity: compiled statements are cached
class Resource:
    """One Stripe object as stored: declared once, read by every stage."""

    object_type: str
    table: Table
    key: str
    columns: tuple[Column, ...]
    routes: tuple[Route, ...]
    listings: tuple[Listing, ...] = ()
    # one object by id: an object no listing returned is confirmed there, and a row
    # left as a guess (same-second events) is refreshed from there
    fetch: tuple[Fetch, ...] = ()
    # a stored row for which Stripe's 404 means "deleted" (a deleted draft invoice)
    gone_means_deleted: Callable[[Mapping[str, Any]], bool] | None = None
    docs: str = ""
    # values used on INSERT when no write knows a NOT NULL column
    insert_defaults: Mapping[str, Any] = field(default_factory=dict)
    # a column whose first non-NULL value means "deleted" (audit action "delete")
    deleted_marker: str | None = None
    # FOLLOWS column -> the column whose merged value it belongs to
    follows: Mapping[str, str] = field(default_factory=dict)
    # columns the pipeline itself sets (never from Stripe) -> who sets them
    local_columns: Mapping[str, str] = field(default_factory=dict)
    # columns of other resources this resource's rows fill (see ``Link``)
    links: tuple[Link, ...] = ()
    # objects a row names that are stored as well (see Reference)
    references: tuple[Reference, ...] = ()
    # parsers of objects no event carries on its own (an invoice's lines as its lines
    # listing returns them): listings and fetches name them in ``read_as``, events never
    # route to them
    readers: tuple[Route, ...] = ()

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.object_type}: a column is declared twice")
        missing = [n for n in names if n not in self.table.c]
        if missing:
            raise ValueError(f"{self.object_type}: {missing} are not columns of {self.table}")
        for column, anchor in self.follows.items():
            if self.column(column).policy is not Policy.FOLLOWS or anchor not in names:
                raise ValueError(f"{self.object_type}: bad FOLLOWS column {column}")

    @property
    def table_name(self) -> str:
        return str(self.table.name)  # a plain str: quoted_name is no JSON key for orjson

    def fetch_for(self, key: str, row: Mapping[str, Any] | None = None) -> Fetch | None:
        """How to fetch the object of this key (the longest matching prefix; of
        fetches through a parent, the first declared whose parent the row names)."""
        found = [
            f
            for f in self.fetch
            if key.startswith(f.prefix)
            and (not f.parent or (row is not None and row.get(f.parent)))
        ]
        return max(found, key=lambda f: len(f.prefix)) if found else None

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.object_type} has no column {name!r}")

    @property
    def policies(self) -> Mapping[str, Policy]:
        return {c.name: c.policy for c in self.columns}

    @property
    def audit_fields(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.audit)

    @property
    def reconciled(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.reconciled)

    @property
    def personal(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.personal)


class Catalog:
    """Every declared resource, with event routing built once from their routes.

    The most specific route wins: an exact type, then the longest prefix; types no
    route names are kept and marked ignored. A joining route (``Route.joins``) adds its
    handler to the route of the same patterns; a resource's readers parse listed and
    fetched objects that no event type names (``reader_for``).
    """

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.resources: tuple[Resource, ...] = tuple(resources)
        by_table: dict[str, Resource] = {}
        by_type: dict[str, Resource] = {}
        exact: dict[str, Route] = {}
        prefix: dict[str, Route] = {}
        joiners: dict[str, list[Route]] = {}
        readers: dict[str, Route] = {}
        for resource in self.resources:
            if resource.table_name in by_table or resource.object_type in by_type:
                raise ValueError(f"{resource.object_type} is declared twice")
            by_table[resource.table_name] = resource
            by_type[resource.object_type] = resource
            for route in resource.routes:
                for pattern in route.patterns:
                    if route.joins:
                        joiners.setdefault(pattern, []).append(route)
                        continue
                    table, name = self._slot(pattern, exact, prefix)
                    if name in table:
                        raise ValueError(f"two routes for {pattern!r}")
                    table[name] = route
            for reader in resource.readers:
                for name in reader.patterns:
                    if name in readers:
                        raise ValueError(f"two readers named {name!r}")
                    readers[name] = reader
        self._join(joiners, exact, prefix)
        self.by_table: Mapping[str, Resource] = MappingProxyType(by_table)
        self.by_type: Mapping[str, Resource] = MappingProxyType(by_type)
        self._exact: Mapping[str, Route] = MappingProxyType(exact)
        # longest prefix first
        self._prefix: tuple[tuple[str, Route], ...] = tuple(
            sorted(prefix.items(), key=lambda item: -len(item[0]))
        )
        for name in readers:
            if self.route_for(name) is not None:
                raise ValueError(f"reader {name!r} is also an event type")
        self._readers: Mapping[str, Route] = MappingProxyType(readers)
        listings: dict[str, tuple[Resource, Listing]] = {}
        for resource in self.resources:
            for listing in resource.listings:
                if listing.name in listings:
                    raise ValueError(f"listing {listing.name} is declared twice")
                if self.reader_for(listing.read_as) is None:
                    raise ValueError(f"listing {listing.name} reads as unrouted {listing.read_as}")
                if listing.per_parent is not None and listing.per_parent.parent not in by_type:
                    raise ValueError(f"listing {listing.name}: unknown parent type")
                listings[listing.name] = (resource, listing)
            for fetch in resource.fetch:
                if self.reader_for(fetch.read_as) is None:
                    raise ValueError(f"{resource.object_type} fetch reads as {fetch.read_as}")
            for reference in resource.references:
                if reference.object_type not in by_type:
                    raise ValueError(f"{resource.object_type} references {reference.object_type}")
        self.listings: Mapping[str, tuple[Resource, Listing]] = MappingProxyType(listings)
        for resource in self.resources:
            for link in resource.links:
                _check_link(resource, link, by_type)

    def links_into(self, target: Resource) -> tuple[tuple[Resource, Link], ...]:
        """The links that fill columns of ``target``, with the resource declaring each."""
        return tuple(
            (source, link)
            for source in self.resources
            for link in source.links
            if link.target == target.object_type
        )

    @staticmethod
    def _slot(
        pattern: str, exact: dict[str, Route], prefix: dict[str, Route]
    ) -> tuple[dict[str, Route], str]:
        if pattern.endswith(".*"):
            return prefix, pattern[:-1]  # keep the dot: "charge." must not match "chargeback"
        return exact, pattern

    def _join(
        self,
        joiners: dict[str, list[Route]],
        exact: dict[str, Route],
        prefix: dict[str, Route],
    ) -> None:
        """Route each joined pattern to its owner's handler followed by the joiners'."""
        combined: dict[tuple[int, ...], Route] = {}
        for pattern, routes in joiners.items():
            table, name = self._slot(pattern, exact, prefix)
            owner = table.get(name)
            if owner is None:
                raise ValueError(f"{pattern!r} joins no route")
            key = (id(owner), *(id(r) for r in routes))
            if key not in combined:
                patterns = tuple(p for p in owner.patterns if joiners.get(p) == routes)
                combined[key] = _join_routes(owner, tuple(routes), patterns)
            table[name] = combined[key]

    def route_for(self, event_type: str) -> Route | None:
        found = self._exact.get(event_type)
        if found is not None:
            return found
        for prefix, route in self._prefix:
            if event_type.startswith(prefix):
                return route
        return None

    def reader_for(self, read_as: str) -> Route | None:
        """The parser a listing or fetch reads its objects with: a reader, else the
        route of that event type."""
        return self._readers.get(read_as) or self.route_for(read_as)

    def routes(self) -> tuple[Route, ...]:
        """Routes as declared (a joining route on its own, not joined)."""
        return tuple(route for resource in self.resources for route in resource.routes)

    def patterns(self) -> dict[str, list[str]]:
        """Event-type patterns per resource (docs and run metadata)."""
        return {
            r.object_type: sorted(p for route in r.routes for p in route.patterns)
            for r in self.resources
        }


def _check_link(source: Resource, link: Link, by_type: Mapping[str, Resource]) -> None:
    """A link fills a newest-known, audited column (the audit log and the post-apply
    hooks see it change) from columns the source declares."""
    target = by_type.get(link.target)
    if target is None:
        raise ValueError(f"{source.object_type} links into unknown {link.target}")
    column = target.column(link.column)
    if column.policy is not Policy.NEWEST_KNOWN or not column.audit:
        raise ValueError(f"{link.target}.{link.column}: a link fills audited newest-known columns")
    for name in (link.value, *link.match, *(c for c, _ in link.prefer)):
        source.column(name)


@cache
def _limits(resource: Resource) -> dict[str, tuple[str, int]]:
    """Per column what the database can hold: ("text", max length) or ("int", max abs)."""
    limits: dict[str, tuple[str, int]] = {}
    for name in (resource.key, *resource.policies):
        column_type = resource.table.c[name].type
        if isinstance(column_type, String) and column_type.length:
            limits[name] = ("text", column_type.length)
        elif isinstance(column_type, SmallInteger):
            limits[name] = ("int", 2**15 - 1)
        elif isinstance(column_type, BigInteger):
            limits[name] = ("int", 2**63 - 1)
        elif isinstance(column_type, Integer):
            limits[name] = ("int", 2**31 - 1)
    return limits


def check_fits(resource: Resource, write: RowWrite) -> None:
    """Refuse a row the table cannot hold (an over-long id, a count past INTEGER).

    Checked after parsing, whether the row came from Python or from a SQL twin, so a
    hostile value fails its own event as a shape error instead of the batch's write.
    """
    limits = _limits(resource)
    for name, value in ((resource.key, write.key), *write.values.items()):
        limit = limits.get(name)
        if limit is None or value is None:
            continue
        kind, bound = limit
        if kind == "text" and isinstance(value, str) and len(value) > bound:
            raise ValueError(f"{resource.object_type} {name} longer than {bound} characters")
        if kind == "int" and isinstance(value, int) and not -bound <= value <= bound:
            raise ValueError(f"{resource.object_type} {name} out of range")


def same_value(a: Any, b: Any) -> bool:
    """Equality of a stored and a parsed value: instants compare as instants (SQLite
    hands back naive UTC datetimes), JSON documents by content."""
    if isinstance(a, datetime) and isinstance(b, datetime):
        return _utc(a) == _utc(b)
    return a == b


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
