"""One Stripe API client for the whole pipeline, built on the official ``StripeClient``.

Why a wrapper: every caller (nightly reconciliation, refund lookups, dunning retries)
must share the same rate limit (``ratelimit.RateLimiter``: per process, or shared by
every process through the app database), retry 429s with backoff (the library retries
5xx, 409 and connection errors, but not 429) and make every process hold back after
one, stream list endpoints page by page, and leave an audit row per outbound call.
Answers are plain dicts (the raw JSON), so callers never depend on ``StripeObject``
behaviour across library versions.

Two HTTP paths, each where it fits:

- GET (lists, retrieves) is the hot path of reconciliation and backfill: hundreds of
  pages a second from one process. It goes straight through urllib3 and decodes each
  body once with orjson (~2 ms of client CPU for a page of 100 charges, against ~10 ms
  through the library, which decodes every page into ``OrderedDict``s before we
  decode it again), with the library's retry rules (connection errors, 409, 429, 5xx,
  ``Stripe-Should-Retry``) and its error classes.
- POST (payments) stays on the library: form encoding, idempotency keys on retries,
  ``CardError`` with decline codes are exactly what recovery relies on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import stripe
import urllib3
from sqlalchemy import Engine

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.db.engine import make_engine, shareable_url
from stripe_pipeline.stripe_api.errors import NotFound
from stripe_pipeline.stripe_api.ratelimit import (
    ENDPOINT_RATE,
    Lane,
    LimiterSpec,
    RateLimiter,
    parse_retry_after,
)

log = logging.getLogger(__name__)

# resource name -> list/retrieve path under /v1
RESOURCES: dict[str, str] = {
    "events": "/v1/events",
    "payment_intents": "/v1/payment_intents",
    "charges": "/v1/charges",
    "refunds": "/v1/refunds",
    "disputes": "/v1/disputes",
    "subscriptions": "/v1/subscriptions",
    "invoices": "/v1/invoices",
    "invoice_payments": "/v1/invoice_payments",
    "customers": "/v1/customers",
    "payment_methods": "/v1/payment_methods",
    "early_fraud_warnings": "/v1/radar/early_fraud_warnings",
    "reviews": "/v1/reviews",
    "credit_notes": "/v1/credit_notes",
    "tax_rates": "/v1/tax_rates",
    "checkout_sessions": "/v1/checkout/sessions",
    "setup_intents": "/v1/setup_intents",
}
PAGE_SIZE = 100
DEFAULT_API_BASE = "https://api.stripe.com"
# both HTTP paths ask for the same API version, so objects have one shape
API_VERSION = stripe.api_version
AUDIT_BATCH = 50
RETRY_BASE_SECONDS = 0.5  # as the library: 0.5 s doubling, at most 5 s, jittered
RETRY_CAP_SECONDS = 5.0
# request parameters never copied into the audit log (card data, secrets)
_SENSITIVE_PARAMS = ("card", "number", "cvc", "exp_month", "exp_year", "api_key", "source")


class _CallCounter:
    """HTTP requests sent by both paths, retries included, with their send times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.call_times: deque[float] = deque(maxlen=100_000)  # monotonic send times

    def count(self) -> None:
        with self._lock:
            self.calls += 1
            self.call_times.append(time.monotonic())


class _LimitedRequestsClient(stripe.RequestsClient):
    """The library's HTTP client, plus our limiter, call counter and 429 retries.

    Hooking ``request`` (called once per HTTP attempt, retries included) means the
    limiter also paces the library's own retries, and the counter counts real requests.
    The lane of the call in progress is set per thread by ``StripeApi._request``.
    """

    def __init__(self, limiter: RateLimiter, counter: _CallCounter, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.limiter = limiter
        self.counter = counter
        self.lane = threading.local()

    def request(self, method, url, headers, post_data=None):  # type: ignore[override]
        path = urlsplit(url).path
        self.limiter.acquire(method, path, getattr(self.lane, "value", Lane.BULK))
        self.counter.count()
        response = super().request(method, url, headers, post_data)
        if response[1] == 429:
            rheaders = response[2] or {}
            self.limiter.penalize(
                method,
                path,
                retry_after=parse_retry_after(rheaders.get("retry-after")),
                reason=rheaders.get("stripe-rate-limited-reason"),
            )
        return response

    def _should_retry(self, response, api_connection_error, num_retries, max_network_retries):
        # A 429 is always worth a retry after backoff, whatever stripe-should-retry says.
        if response is not None and response[1] == 429:
            return num_retries < (max_network_retries or 0)
        return super()._should_retry(
            response, api_connection_error, num_retries, max_network_retries
        )


def _safe_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Request parameters fit for the audit log: ids and filters, never card data."""
    if not params:
        return None
    return {
        k: ("[redacted]" if any(s in k for s in _SENSITIVE_PARAMS) else v)
        for k, v in params.items()
        if not isinstance(v, dict) or k == "created"
    }


def _error_outcome(exc: stripe.StripeError) -> dict[str, Any]:
    err = getattr(exc, "error", None)
    return {
        "outcome": "error",
        "http_status": exc.http_status,
        "error_type": type(exc).__name__,
        "error_code": exc.code,
        "decline_code": getattr(err, "decline_code", None) if err is not None else None,
        "request_id": exc.request_id,
    }


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What another process needs to build the same client: the key, the shared rate
    limit and the audit database. Handed over on a pipe (the listing process's stdin),
    never on a command line or in a log: it holds the key (and the database URLs may
    hold a password), so its repr shows neither."""

    api_key: str = field(repr=False)
    api_base: str | None
    max_network_retries: int
    timeout: float
    limiter: LimiterSpec
    audit_url: str | None = field(repr=False)
    actor: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ClientSpec:
        return cls(**{**doc, "limiter": LimiterSpec(**doc["limiter"])})


class StripeApi:
    """Rate-limited, retrying, audited access to the Stripe API (or a local fake).

    ``limiter`` is the rate limit this client takes its requests from: pass
    ``RateLimiter.shared(engine, api_key)`` so that every process of the deployment
    shares Stripe's budget. Without one the client limits this process alone, at
    Stripe's limits for the key (100/s live, 25/s test, 25/s per endpoint), or at
    ``requests_per_second`` for both when given (local fakes).
    """

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 3,
        requests_per_second: float | None = None,
        limiter: RateLimiter | None = None,
        audit_engine: Engine | None = None,
        actor: str = "pipeline",
        timeout: float = 30.0,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe API key is required (STRIPE_API_KEY)")
        if limiter is not None and requests_per_second is not None:
            raise ValueError("give the rate to the limiter, not to the client")
        self.limiter = limiter or RateLimiter.in_process(
            api_key,
            account_rate=requests_per_second,
            endpoint_rate=requests_per_second or ENDPOINT_RATE,
        )
        self.requests_per_second = self.limiter.account_rate
        self._counter = _CallCounter()
        self._http = _LimitedRequestsClient(self.limiter, self._counter, timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
            stripe_version=API_VERSION,
        )
        self.api_base = api_base
        self._base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self._get_headers = {
            "Authorization": f"Bearer {api_key}",
            "Stripe-Version": API_VERSION,
            "User-Agent": f"stripe-pipeline (Stripe/v1 PythonBindings/{stripe.VERSION})",
        }
        # connections kept per host: as many as a run's listing has calls in flight
        # (``RunConfig.listing_workers``); past it urllib3 opens and drops extra ones
        self._pool = urllib3.PoolManager(maxsize=128, retries=False)
        self._timeout = urllib3.Timeout(connect=min(timeout, 10.0), read=timeout)
        self.max_network_retries = max_network_retries
        self.timeout = timeout
        self._api_key = api_key
        self.audit_engine = audit_engine
        self.actor = actor
        self._audit_lock = threading.Lock()
        self._audit_buffer: list[AuditEntry] = []

    def __repr__(self) -> str:  # never show the key
        return f"StripeApi(api_base={self.api_base!r}, rps={self.requests_per_second})"

    def spec(self) -> ClientSpec | None:
        """How another process builds this client (same key, limit and audit); None
        when it cannot share them: a limit kept in this process, or an in-memory
        database."""
        limiter = self.limiter.spec()
        audit_url = shareable_url(self.audit_engine) if self.audit_engine is not None else None
        if limiter is None or (self.audit_engine is not None and audit_url is None):
            return None
        return ClientSpec(
            self._api_key,
            self.api_base,
            self.max_network_retries,
            self.timeout,
            limiter,
            audit_url,
            self.actor,
        )

    @classmethod
    def from_spec(cls, spec: ClientSpec) -> StripeApi:
        """The client :meth:`spec` describes, in this process; close with :meth:`close`."""
        audit = make_engine(spec.audit_url) if spec.audit_url is not None else None
        return cls(
            spec.api_key,
            api_base=spec.api_base,
            max_network_retries=spec.max_network_retries,
            limiter=RateLimiter.from_spec(spec.limiter),
            audit_engine=audit,
            actor=spec.actor,
            timeout=spec.timeout,
        )

    def close(self) -> None:
        """Write what is buffered and release the limiter (a client built by :meth:`from_spec`)."""
        self.flush_audit()
        self.limiter.close()
        if self.audit_engine is not None:
            self.audit_engine.dispose()

    @property
    def calls(self) -> int:
        """HTTP requests sent so far, retries included (benchmarks and run metadata)."""
        return self._counter.calls

    @property
    def call_times(self) -> list[float]:
        """Monotonic send time of each recent request, to verify the rate limit."""
        return list(self._counter.call_times)

    # --- low level -------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        object_type: str = "stripe_api",
        object_id: str | None = None,
        buffer_audit: bool = False,
        lane: Lane = Lane.BULK,
    ) -> dict[str, Any]:
        """One logical call through the library (which may retry it); audited."""
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        calls_before = self._counter.calls
        started = time.perf_counter()
        details: dict[str, Any] = {
            "method": method.upper(),
            "path": path,
            "params": _safe_params(params),
            "idempotency_key": idempotency_key,
        }
        self._http.lane.value = lane
        try:
            response = self._client.raw_request(method, path, **(params or {}), **options)
        except stripe.StripeError as exc:
            details.update(_error_outcome(exc))
            self._audit(details, started, calls_before, object_type, object_id, flush=True)
            raise
        except Exception as exc:
            details.update({"outcome": "error", "error_type": type(exc).__name__})
            self._audit(details, started, calls_before, object_type, object_id, flush=True)
            raise
        details.update(
            {
                "outcome": "ok",
                "http_status": response.code,
                "request_id": response.headers.get("request-id"),
            }
        )
        self._audit(details, started, calls_before, object_type, object_id, flush=not buffer_audit)
        return orjson.loads(response.body)  # plain dicts, not the library's OrderedDicts

    def _get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        object_type: str,
        object_id: str | None = None,
        buffer_audit: bool = False,
        lane: Lane = Lane.BULK,
    ) -> dict[str, Any]:
        """One logical GET on the lean path (see the module docstring); audited."""
        calls_before = self._counter.calls
        started = time.perf_counter()
        details: dict[str, Any] = {
            "method": "GET",
            "path": path,
            "params": _safe_params(params),
            "idempotency_key": None,
        }
        try:
            status, body, headers = self._send_get(path, encode_params(params or {}), lane)
        except stripe.StripeError as exc:
            details.update(_error_outcome(exc))
            self._audit(details, started, calls_before, object_type, object_id, flush=True)
            raise
        except Exception as exc:
            details.update({"outcome": "error", "error_type": type(exc).__name__})
            self._audit(details, started, calls_before, object_type, object_id, flush=True)
            raise
        details.update(
            {"outcome": "ok", "http_status": status, "request_id": headers.get("request-id")}
        )
        self._audit(details, started, calls_before, object_type, object_id, flush=not buffer_audit)
        return body

    def _send_get(
        self, path: str, query: list[tuple[str, str]], lane: Lane
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """GET with the library's retry rules; 429s cool the shared limiter down."""
        url = f"{self._base}{path}?{urlencode(query)}" if query else f"{self._base}{path}"
        retries = 0
        while True:
            self.limiter.acquire("GET", path, lane)
            self._counter.count()
            try:
                response = self._pool.request(
                    "GET", url, headers=self._get_headers, timeout=self._timeout, retries=False
                )
            except urllib3.exceptions.HTTPError as exc:
                if retries < self.max_network_retries:
                    retries += 1
                    time.sleep(_backoff(retries))
                    continue
                raise stripe.APIConnectionError(
                    f"could not reach the Stripe API ({type(exc).__name__}: {exc})",
                    should_retry=True,
                ) from exc
            status, headers = response.status, response.headers
            if status == 429:
                self.limiter.penalize(
                    "GET",
                    path,
                    retry_after=parse_retry_after(headers.get("retry-after")),
                    reason=headers.get("stripe-rate-limited-reason"),
                )
            if 200 <= status < 300:
                return status, orjson.loads(response.data), headers
            if retries < self.max_network_retries and _should_retry(status, headers):
                retries += 1
                time.sleep(_backoff(retries))
                continue
            raise _api_error(status, response.data, headers)

    def _audit(
        self,
        details: dict[str, Any],
        started: float,
        calls_before: int,
        object_type: str,
        object_id: str | None,
        *,
        flush: bool,
    ) -> None:
        if self.audit_engine is None:
            return
        details["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        details["http_requests"] = max(self._counter.calls - calls_before, 1)
        entry = AuditEntry(
            actor=self.actor,
            action="stripe_api_call",
            object_type=object_type,
            object_id=object_id,
            details=details,
        )
        with self._audit_lock:
            self._audit_buffer.append(entry)
            if not flush and len(self._audit_buffer) < AUDIT_BATCH:
                return
            entries, self._audit_buffer = self._audit_buffer, []
        self._write_audit(entries)

    def _write_audit(self, entries: list[AuditEntry]) -> None:
        try:
            with self.audit_engine.begin() as conn:  # type: ignore[union-attr]
                record(conn, entries)
        except Exception:  # the call happened; losing its audit row must be loud, not fatal
            log.exception("could not write %d stripe_api_call audit rows", len(entries))

    def flush_audit(self) -> None:
        """Write buffered audit rows (list pages are batched)."""
        with self._audit_lock:
            entries, self._audit_buffer = self._audit_buffer, []
        if entries:
            self._write_audit(entries)

    # --- reads -----------------------------------------------------------------------

    def list_page(
        self, path: str, params: Mapping[str, Any] | None = None, *, lane: Lane = Lane.BULK
    ) -> dict[str, Any]:
        """One page of a list endpoint (any path, e.g. ``/v1/customers/{id}/payment_methods``).

        The unit of work of ``listing.SlicedLister``: pass ``api.list_page`` as its
        ``fetch_page``. Nested params are encoded as Stripe expects
        (``created[gte]``, ``expand[0]``).
        """
        return self._get(
            path, params, object_type=path.rsplit("/", 1)[-1], buffer_audit=True, lane=lane
        )

    def list_all(
        self,
        resource: str,
        *,
        created_gte: int | None = None,
        created_lte: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every object of a list endpoint, newest first, one page of 100 in memory at a time.

        :class:`NotFound` when Stripe answers 404: the list's parent does not exist (a
        deleted customer's payment methods), as :meth:`get` says for one object.
        """
        path = resource_path(resource)
        query: dict[str, Any] = {"limit": PAGE_SIZE, **(params or {})}
        created: dict[str, int] = {}
        if created_gte is not None:
            created["gte"] = int(created_gte)
        if created_lte is not None:
            created["lte"] = int(created_lte)
        if created:
            query["created"] = created
        try:
            while True:
                try:
                    page = self._get(
                        path, query, object_type=path.rsplit("/", 1)[-1], buffer_audit=True
                    )
                except stripe.InvalidRequestError as exc:
                    if exc.http_status == 404:
                        raise NotFound(path) from exc
                    raise
                items = page.get("data") or []
                yield from items
                if not page.get("has_more") or not items:
                    return
                query = {**query, "starting_after": items[-1]["id"]}
        finally:
            self.flush_audit()

    def retrieve(self, resource: str, object_id: str) -> dict[str, Any]:
        """One object by id."""
        return self._get(
            f"{resource_path(resource)}/{object_id}", object_type=resource, object_id=object_id
        )

    def get(self, path: str) -> dict[str, Any]:
        """One object at a ``/v1/...`` path; :class:`NotFound` when Stripe answers 404."""
        try:
            return self._get(path, object_type=path.split("/")[2], buffer_audit=True)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise NotFound(path) from exc
            raise

    def fetch_object(self, path: str) -> dict[str, Any] | None:
        """One object at a ``/v1/...`` path, ``None`` when Stripe answers 404: the
        ``ObjectSource`` processing fetches referenced objects through."""
        try:
            return self.get(path)
        except NotFound:
            return None
        finally:
            self.flush_audit()

    def list_charge_refunds(self, charge_id: str) -> list[dict[str, Any]]:
        """All refunds of a charge (``charge.refunded`` stopped embedding them in 2022-11-15)."""
        return list(self.list_all("refunds", params={"charge": charge_id}))

    def list_payment_intent_invoice_payments(
        self, payment_intent_id: str
    ) -> list[dict[str, Any]] | None:
        """The invoice payments of a PaymentIntent: since API 2025-03-31.basil the only
        place its invoice is named. ``None`` when the API refuses the question (400 or
        404: an endpoint or filter it does not know), so processing goes on without the
        link; rate limits, timeouts and 5xx raise (the event is retried)."""
        payment = {"type": "payment_intent", "payment_intent": payment_intent_id}
        try:
            return list(self.list_all("invoice_payments", params={"payment": payment}))
        except NotFound:  # an API (a fake) without the endpoint
            log.warning("invoice payments of %s unavailable: no such endpoint", payment_intent_id)
            return None
        except stripe.StripeError as exc:
            if exc.http_status == 400:
                log.warning("invoice payments of %s unavailable: %s", payment_intent_id, exc)
                return None
            raise

    def list_lines(self, path: str) -> list[dict[str, Any]]:
        """Every line of an invoice or credit note (``/v1/invoices/{id}/lines``): an
        event embeds only the first page."""
        return list(self.list_all(path))

    # --- payment operations ------------------------------------------------------------

    def pay_invoice(
        self, invoice_id: str, *, idempotency_key: str, payment_method: str | None = None
    ) -> dict[str, Any]:
        """Attempt to collect an open invoice now; a decline raises ``stripe.CardError``."""
        params = {"payment_method": payment_method} if payment_method else None
        return self._request(
            "post",
            f"/v1/invoices/{invoice_id}/pay",
            params,
            idempotency_key=idempotency_key,
            object_type="invoice",
            object_id=invoice_id,
            lane=Lane.PRIORITY,
        )

    def confirm_payment_intent(
        self, payment_intent_id: str, *, idempotency_key: str, payment_method: str | None = None
    ) -> dict[str, Any]:
        """Confirm a PaymentIntent again; a decline raises ``stripe.CardError``."""
        params = {"payment_method": payment_method} if payment_method else None
        return self._request(
            "post",
            f"/v1/payment_intents/{payment_intent_id}/confirm",
            params,
            idempotency_key=idempotency_key,
            object_type="payment_intent",
            object_id=payment_intent_id,
            lane=Lane.PRIORITY,
        )


def resource_path(resource: str) -> str:
    """``charges`` -> ``/v1/charges``; a ``/v1/...`` path is its own."""
    if resource.startswith("/v1/"):
        return resource
    try:
        return RESOURCES[resource]
    except KeyError:
        raise ValueError(
            f"unknown Stripe resource {resource!r}; known: {sorted(RESOURCES)}"
        ) from None


def encode_params(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding of nested params: ``created[gte]=1``, ``expand[0]=x``."""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            out.extend(encode_params(value, name))
        elif isinstance(value, list | tuple):
            out.extend(encode_params(dict(enumerate(value)), name))
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return out


def _should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """The library's rule (``Stripe-Should-Retry`` wins; 409 and 5xx), plus 429."""
    advice = headers.get("stripe-should-retry")
    if advice in ("true", "false"):
        return advice == "true"
    return status in (409, 429) or status >= 500


def _backoff(retry: int) -> float:
    delay = min(RETRY_BASE_SECONDS * 2 ** (retry - 1), RETRY_CAP_SECONDS)
    return max(RETRY_BASE_SECONDS, delay * random.uniform(0.5, 1.0))


def _api_error(status: int, body: bytes, headers: Mapping[str, str]) -> stripe.StripeError:
    """The library's error class for an error answer, so callers catch one family."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    err = doc.get("error") if isinstance(doc, dict) else None
    err = err if isinstance(err, dict) else {}
    message = err.get("message") or f"Stripe API answered HTTP {status}"
    kwargs: dict[str, Any] = {
        "http_body": body,
        "http_status": status,
        "json_body": doc,
        "headers": dict(headers),
        "code": err.get("code"),
    }
    if status == 429:
        return stripe.RateLimitError(message, **kwargs)
    if status in (400, 404):
        return stripe.InvalidRequestError(message, err.get("param"), **kwargs)
    if status == 401:
        return stripe.AuthenticationError(message, **kwargs)
    if status == 403:
        return stripe.PermissionError(message, **kwargs)
    return stripe.APIError(message, **kwargs)
