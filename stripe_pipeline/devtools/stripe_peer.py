"""One Stripe API on 127.0.0.1: localstripe for what it has, plus what it lacks.

Used by ``stripe-pipeline dev`` (in front of the demo's localstripe) and by the test
drills (tests/support imports it from here: one implementation). Dev tooling only:
it is a Flask app, and the pipeline's runtime code never imports it.

localstripe (GPL-3.0, its own process, never imported) keeps customers, payment
methods, PaymentIntents, charges, refunds, subscriptions and invoices, and logs the
events it emits. It has no disputes, emits no ``charge.*``, ``refund.*`` or
``customer.subscription.updated`` events, lists oldest first, refuses ``created[...]``
on most lists and answers 404 for a deleted customer. This front, a small threaded
WSGI server in the demo's (or the test's) process, gives the pipeline's real
``StripeApi`` client one base URL that behaves like Stripe where reconciliation
depends on it:

- objects localstripe cannot keep (disputes, balance transactions, payouts, the
  fixture-built objects of the demo)
  live in the front's own store and win over localstripe's copy of the same id, and
  the events built for what localstripe cannot emit are added to ``/v1/events``
  beside localstripe's own; with a ``state_file`` the store survives a restart;
- every list is Stripe's: newest first, ``limit`` (at most 100), ``starting_after`` /
  ``ending_before``, ``has_more``, ``created[gt|gte|lt|lte]`` on every endpoint;
- ``GET /v1/subscriptions`` leaves canceled (and incomplete_expired) subscriptions
  out unless ``status=all`` (or that status) is asked for;
- payment methods are listed per customer (``/v1/payment_methods?customer=...`` or
  ``/v1/customers/{id}/payment_methods``); without a customer the list is empty;
- a deleted customer answers ``{"id", "object": "customer", "deleted": true}`` by id,
  and 404 ``resource_missing`` where it is named as a parent (its payment methods);
- a refund names its charge's PaymentIntent (localstripe leaves ``payment_intent``
  null), as Stripe's refunds of PaymentIntent charges do;
- a stored object's embedded list is served as its sub-resource
  (``/v1/invoices/{id}/lines`` of a fixture-built invoice), paged like any list;
- unknown objects answer 404 with Stripe's error body (``resource_missing``);
- ``GET /v1/balance_transactions?payout=po_...`` lists the transactions the caller said
  the payout carried (``carry``): Stripe's transaction object does not name its
  payout, and a payout it has not reconciled answers 400.

Writes (``POST``/``DELETE``) go straight to localstripe; the front only remembers
which customers were deleted through it.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

# collections localstripe has no endpoint for: served from the front's store only (the
# drill's traffic makes no invoice payments: that list is empty, and a fetch answers 404)
OWN_ONLY = frozenset(
    {"disputes", "invoice_payments", "promotion_codes", "balance_transactions", "payouts"}
)
# endpoints under a namespace: their collection is two path segments
NAMESPACES = frozenset({"checkout", "radar"})
# Stripe's prices API answers for plans too (a plan is a price with the same id);
# localstripe speaks only the plans API
SERVED_BY = {"prices": "plans"}
# subscription statuses Stripe's list leaves out unless asked for
HIDDEN_SUBSCRIPTIONS = frozenset({"canceled", "incomplete_expired"})
MAX_LIMIT = 100
_CREATED = re.compile(r"^created\[(gt|gte|lt|lte)\]$")
_OPS: dict[str, Callable[[int, int], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}
# query keys the front handles itself; the rest are filters passed to localstripe
_PAGING = ("limit", "starting_after", "ending_before")


def stripe_error(status: int, message: str, *, code: str | None = None, param: str | None = None):
    """A Stripe-shaped error response."""
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    response = jsonify({"error": error})
    response.status_code = status
    return response


def _no_such(kind: str, object_id: str, param: str = "id") -> Response:
    return stripe_error(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # the drill prints its own summary
        pass


class Upstream(Protocol):
    """The localstripe the front stands before: where it is, a key it accepts, and how
    to empty it."""

    base_url: str
    api_key: str

    def flush(self) -> None: ...


class StripePeer:
    """The front: start it, point ``STRIPE_API_BASE`` (or ``api_base``) at ``base_url``."""

    def __init__(self, localstripe: Upstream, state_file: Path | None = None) -> None:
        self.localstripe = localstripe
        self.api_key = localstripe.api_key
        self.state_file = state_file
        self._lock = threading.Lock()
        # collection -> id -> (sequence, object): fixture-built objects
        self._store: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
        self._deleted: dict[str, str] = {}  # id -> object kind, deleted through the front
        self._carried: dict[str, set[str]] = {}  # payout id -> balance transaction ids
        self._load()
        self._seq = itertools.count(
            1 + max((seq for objs in self._store.values() for seq, _ in objs.values()), default=-1)
        )
        self._local = threading.local()  # one HTTP session per server thread
        self._charge_intents: dict[str, str | None] = {}  # charge id -> its PaymentIntent
        # (method, path) of the latest requests served, for assertions; bounded, as the
        # demo's front serves for hours
        self.requests: deque[tuple[str, str]] = deque(maxlen=10_000)
        self.app = self._build_app()
        self._server = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # --- lifecycle ------------------------------------------------------------------

    def start(self, port: int = 0) -> StripePeer:
        """Serve on 127.0.0.1 (only) at ``port``, or a free one, in a daemon thread."""
        self._server = make_server(
            "127.0.0.1", port, self.app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stripe-peer", daemon=True
        )
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def reset(self) -> None:
        """Forget everything, here and in localstripe."""
        self.localstripe.flush()
        with self._lock:
            self._store.clear()
            self._deleted.clear()
            self._carried.clear()
            self.requests.clear()
            self._save()

    def _http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    # --- state that outlives the process (the demo's data folder) --------------------

    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        for collection, items in state.get("store", {}).items():
            self._store[collection] = {obj["id"]: (seq, obj) for seq, obj in items}
        self._deleted.update(state.get("deleted", {}))

    def _save(self) -> None:
        """Write the store (under the lock): a temp file, then an atomic rename."""
        if self.state_file is None:
            return
        state = {
            "store": {c: list(objs.values()) for c, objs in self._store.items()},
            "deleted": self._deleted,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    # --- the drill's (or the demo's) side ----------------------------------------------

    def put(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store (or replace) a fixture-built object; it is served as given from now on."""
        with self._lock:
            found = self._store.setdefault(collection, {}).get(obj["id"])
            seq = found[0] if found is not None else next(self._seq)
            self._store[collection][obj["id"]] = (seq, copy.deepcopy(obj))
            self._save()
        return obj

    def carry(self, payout_id: str, transaction_ids: list[str]) -> None:
        """The balance transactions an automatic payout carried, once Stripe reconciled it."""
        with self._lock:
            self._carried[payout_id] = set(transaction_ids)

    def add_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Log an event the drill built; ``/v1/events`` lists it beside localstripe's."""
        return self.put("events", event)

    def emitted_events(self) -> list[dict[str, Any]]:
        """Every event of the account in a fixed order: localstripe's as it logged them,
        then the drill's as they were added (the order chaos delivery starts from)."""
        own = [event for _, event in sorted(self._own("events"), key=lambda item: item[0])]
        return self._localstripe_list("events", {}) + own

    # --- HTTP -----------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("stripe_peer")

        @app.route("/v1/<path:path>", methods=["GET", "POST", "DELETE"])
        def v1(path: str):
            self.requests.append((request.method, path))
            if not request.headers.get("Authorization", "").startswith(("Bearer sk_", "Basic ")):
                return stripe_error(401, "Invalid API Key provided")
            parts = path.strip("/").split("/")
            if parts[0] in NAMESPACES and len(parts) > 1:  # /v1/checkout/sessions[/id]
                parts = [f"{parts[0]}/{parts[1]}", *parts[2:]]
            if request.method == "GET":
                if len(parts) == 1:
                    return self._list(parts[0], self._query())
                if len(parts) == 2:
                    return self._retrieve(parts[0], parts[1])
                if len(parts) == 3 and parts[0] == "customers" and parts[2] == "payment_methods":
                    return self._list("payment_methods", {**self._query(), "customer": parts[1]})
                if len(parts) == 3:
                    embedded = self._embedded_list(parts[0], parts[1], parts[2])
                    if embedded is not None:
                        return embedded
            return self._forward(f"/v1/{path}")

        @app.route("/_config/<path:path>", methods=["POST", "DELETE"])
        def config(path: str):
            return self._forward(f"/_config/{path}")

        return app

    def _query(self) -> dict[str, Any]:
        query: dict[str, Any] = {}
        for key in request.args:
            values = request.args.getlist(key)
            query[key] = values if key.endswith("[]") else values[-1]
        return query

    def _forward(self, path: str) -> Response:
        """A write (or an endpoint the front does not shape) as localstripe answers it."""
        url = f"{self.localstripe.base_url}{path}"
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        answer = self._http().request(
            request.method,
            url,
            params=list(request.args.items(multi=True)),
            data=request.get_data(),
            headers=headers,
            timeout=30,
        )
        deleted = re.fullmatch(r"/v1/customers/([^/]+)", path)
        if request.method == "DELETE" and answer.status_code == 200 and deleted:
            with self._lock:
                self._deleted[deleted.group(1)] = "customer"
                self._save()
        if answer.status_code == 404:
            return stripe_error(404, "Unrecognized request URL or object", code="resource_missing")
        return Response(answer.content, status=answer.status_code, mimetype="application/json")

    # --- reads shaped like Stripe's ---------------------------------------------------

    def _localstripe_list(self, collection: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """Every object localstripe lists, in its (insertion) order; raises LookupError
        when it answers 404 (a parent that does not exist)."""
        answer = self._http().get(
            f"{self.localstripe.base_url}/v1/{SERVED_BY.get(collection, collection)}",
            params={**filters, "limit": 1_000_000},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )
        if answer.status_code == 404:
            raise LookupError(collection)
        answer.raise_for_status()
        return answer.json()["data"]

    def _own(self, collection: str) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [
                (seq, copy.deepcopy(obj)) for seq, obj in self._store.get(collection, {}).values()
            ]

    def _list(self, collection: str, query: dict[str, Any]) -> Response:
        try:
            limit = int(query.pop("limit", 10))
        except ValueError:
            return stripe_error(400, "Invalid integer: limit", param="limit")
        if not 1 <= limit <= MAX_LIMIT:
            return stripe_error(
                400, f"This value must be less than or equal to {MAX_LIMIT}.", param="limit"
            )
        starting_after = query.pop("starting_after", None)
        ending_before = query.pop("ending_before", None)
        created = {}
        for key in list(query):
            match = _CREATED.match(key)
            if match:
                created[match.group(1)] = int(query.pop(key))
        if "created" in query:
            created["eq"] = int(query.pop("created"))
        for key in [k for k in query if k.startswith("expand")]:
            query.pop(key)  # objects are served as they are (expanded where they embed)
        status = query.pop("status", None) if collection == "subscriptions" else None
        carried: set[str] | None = None
        if collection == "balance_transactions" and "payout" in query:
            payout = query.pop("payout")
            with self._lock:
                carried = self._carried.get(payout)
            if carried is None:
                return stripe_error(
                    400,
                    "Balance transaction history can only be filtered on automatic "
                    "payouts Stripe has reconciled.",
                    param="payout",
                )
        if collection == "payment_methods" and not query.get("customer"):
            items: list[dict[str, Any]] = []  # Stripe lists a customer's methods only
        else:
            try:
                items = self._merged(collection, query)
            except LookupError:
                customer = query.get("customer", "")
                return _no_such("customer", customer, param="customer")
        if collection == "subscriptions":
            if status is None:
                items = [s for s in items if s.get("status") not in HIDDEN_SUBSCRIPTIONS]
            elif status != "all":
                items = [s for s in items if s.get("status") == status]
        if created:
            items = [o for o in items if _created_matches(o.get("created"), created)]
        if carried is not None:
            items = [o for o in items if o.get("id") in carried]
        page = _page(f"/v1/{collection}", items, limit, starting_after, ending_before)
        if collection == "refunds":
            page["data"] = [self._with_payment_intent(refund) for refund in page["data"]]
        return jsonify(page)

    def _embedded_list(self, collection: str, object_id: str, field: str) -> Response | None:
        """``/v1/{collection}/{id}/{field}`` of a stored object that embeds that list."""
        obj = next((o for _, o in self._own(collection) if o.get("id") == object_id), None)
        embedded = (obj or {}).get(field)
        if not isinstance(embedded, dict) or embedded.get("object") != "list":
            return None
        query = self._query()
        try:
            limit = int(query.get("limit", 10))
        except ValueError:
            return stripe_error(400, "Invalid integer: limit", param="limit")
        url = f"/v1/{collection}/{object_id}/{field}"
        items = list(embedded.get("data") or [])
        return jsonify(
            _page(url, items, limit, query.get("starting_after"), query.get("ending_before"))
        )

    def _with_payment_intent(self, refund: dict[str, Any]) -> dict[str, Any]:
        """The refund with its charge's PaymentIntent where localstripe left it out."""
        charge_id = refund.get("charge")
        if refund.get("payment_intent") is not None or not isinstance(charge_id, str):
            return refund
        if charge_id not in self._charge_intents:
            charge = next((o for _, o in self._own("charges") if o.get("id") == charge_id), None)
            if charge is None:
                answer = self._http().get(
                    f"{self.localstripe.base_url}/v1/charges/{charge_id}",
                    headers={"Authorization": f"Bearer {self.api_key}"},
                    timeout=30,
                )
                charge = answer.json() if answer.status_code == 200 else {}
            intent = charge.get("payment_intent")
            self._charge_intents[charge_id] = intent if isinstance(intent, str) else None
        return {**refund, "payment_intent": self._charge_intents[charge_id]}

    def _merged(self, collection: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """localstripe's objects and the front's, newest first (ties: newest added first)."""
        if collection in OWN_ONLY:
            theirs: list[dict[str, Any]] = []
        else:
            if collection == "subscriptions":
                filters = {**filters, "status": "all"}  # the front hides, as Stripe does
            if collection == "payment_methods" and filters.get("customer") in self._deleted:
                raise LookupError(filters["customer"])
            try:
                theirs = self._localstripe_list(collection, filters)
            except LookupError:
                if filters.get("customer"):
                    raise  # the parent does not exist (a deleted customer)
                theirs = []  # a collection localstripe lacks: the front's own store
        own = [(seq, obj) for seq, obj in self._own(collection) if _matches(obj, filters)]
        replaced = {obj["id"] for _, obj in own}
        # localstripe lists in insertion order: reversed, the newest of a second comes first
        ranked = [
            (obj.get("created") or 0, -n, obj)
            for n, obj in enumerate(theirs)
            if obj.get("id") not in replaced
        ]
        offset = len(theirs)
        ranked += [(obj.get("created") or 0, -(offset + seq), obj) for seq, obj in own]
        ranked.sort(key=lambda item: (item[0], -item[1]), reverse=True)
        return [obj for _, _, obj in ranked]

    def _retrieve(self, collection: str, object_id: str) -> Response:
        for seq_obj in self._own(collection):
            if seq_obj[1].get("id") == object_id:
                return jsonify(seq_obj[1])
        kind = self._deleted.get(object_id)
        if kind is not None and collection == f"{kind}s":
            return jsonify({"id": object_id, "object": kind, "deleted": True})
        if collection in OWN_ONLY:
            return _no_such(collection[:-1], object_id)
        answer = self._http().get(
            f"{self.localstripe.base_url}/v1/{SERVED_BY.get(collection, collection)}/{object_id}",
            params=list(request.args.items(multi=True)),
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )
        if answer.status_code == 404:
            return _no_such(collection[:-1], object_id)
        if collection == "refunds" and answer.status_code == 200:
            return jsonify(self._with_payment_intent(answer.json()))
        return Response(answer.content, status=answer.status_code, mimetype="application/json")


def _matches(obj: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Stripe's list filters on the front's own objects: equality of the named reference."""
    for key, wanted in filters.items():
        if key == "status" and wanted == "all":
            continue
        value = obj.get(key)
        if isinstance(value, dict):
            value = value.get("id")
        if value != wanted:
            return False
    return True


def _created_matches(created: Any, bounds: dict[str, int]) -> bool:
    if not isinstance(created, int):
        return False
    for op, bound in bounds.items():
        if op == "eq":
            if created != bound:
                return False
        elif not _OPS[op](created, bound):
            return False
    return True


def _page(
    url: str,
    items: list[dict[str, Any]],
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
) -> dict[str, Any]:
    """One page as Stripe answers it; an unknown cursor starts from the top (as localstripe)."""
    ids = [o.get("id") for o in items]
    if starting_after is not None:
        start = ids.index(starting_after) + 1 if starting_after in ids else 0
        data = items[start : start + limit]
        has_more = start + limit < len(items)
    elif ending_before is not None:
        end = ids.index(ending_before) if ending_before in ids else 0
        data = items[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        data = items[:limit]
        has_more = limit < len(items)
    return {"object": "list", "url": url, "has_more": has_more, "data": data}
