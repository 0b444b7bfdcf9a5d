"""One Stripe API client for the whole pipeline, built on the official ``StripeClient``.

Why a wrapper: every caller (nightly reconciliation, refund lookups, dunning retries)
must share the same client-side rate limit, retry 429s with backoff (the library
retries 5xx, 409 and connection errors, but not 429), stream list endpoints page by
page, and leave an audit row per outbound call. Answers are plain dicts (the raw
JSON), so callers never depend on ``StripeObject`` behaviour across library versions.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import stripe
from sqlalchemy import Engine

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.stripe_api.errors import NotFound
from stripe_pipeline.stripe_api.ratelimit import TokenBucket, default_rate_for_key

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
# pace at 95% of the limit: requests spaced exactly 1/N apart reach the server with
# jitter, and two that bunch up would put N + 1 into one second there
HEADROOM = 0.95
AUDIT_BATCH = 50
# request parameters never copied into the audit log (card data, secrets)
_SENSITIVE_PARAMS = ("card", "number", "cvc", "exp_month", "exp_year", "api_key", "source")


class _LimitedRequestsClient(stripe.RequestsClient):
    """The library's HTTP client, plus our limiter, call counter and 429 retries.

    Hooking ``request`` (called once per HTTP attempt, retries included) means the
    limiter also paces the library's own retries, and ``calls`` counts real requests.
    """

    def __init__(self, limiter: TokenBucket, *, timeout: float = 30.0) -> None:
        super().__init__(timeout=timeout)
        self.limiter = limiter
        self._count_lock = threading.Lock()
        self.calls = 0
        self.call_times: deque[float] = deque(maxlen=100_000)  # monotonic send times

    def request(self, method, url, headers, post_data=None):  # type: ignore[override]
        self.limiter.acquire()
        with self._count_lock:
            self.calls += 1
            self.call_times.append(time.monotonic())
        return super().request(method, url, headers, post_data)

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


class StripeApi:
    """Rate-limited, retrying, audited access to the Stripe API (or a local fake)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 3,
        requests_per_second: float | None = None,
        audit_engine: Engine | None = None,
        actor: str = "pipeline",
        timeout: float = 30.0,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe API key is required (STRIPE_API_KEY)")
        self.requests_per_second = requests_per_second or default_rate_for_key(api_key)
        self.limiter = TokenBucket(self.requests_per_second * HEADROOM)
        self._http = _LimitedRequestsClient(self.limiter, timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )
        self.api_base = api_base
        self.audit_engine = audit_engine
        self.actor = actor
        self._audit_lock = threading.Lock()
        self._audit_buffer: list[AuditEntry] = []

    def __repr__(self) -> str:  # never show the key
        return f"StripeApi(api_base={self.api_base!r}, rps={self.requests_per_second})"

    @property
    def calls(self) -> int:
        """HTTP requests sent so far, retries included (benchmarks and run metadata)."""
        return self._http.calls

    @property
    def call_times(self) -> list[float]:
        """Monotonic send time of each recent request, to verify the rate limit."""
        return list(self._http.call_times)

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
    ) -> dict[str, Any]:
        """One logical call (the library may retry it); audited with outcome and latency."""
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        calls_before = self._http.calls
        started = time.perf_counter()
        details: dict[str, Any] = {
            "method": method.upper(),
            "path": path,
            "params": _safe_params(params),
            "idempotency_key": idempotency_key,
        }
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
        return json.loads(response.body)  # plain dicts, not the library's OrderedDicts

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
        details["http_requests"] = max(self._http.calls - calls_before, 1)
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

    def list_all(
        self,
        resource: str,
        *,
        created_gte: int | None = None,
        created_lte: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every object of a list endpoint, newest first, one page of 100 in memory at a time."""
        path = _path(resource)
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
                page = self._request(
                    "get", path, query, object_type=path.rsplit("/", 1)[-1], buffer_audit=True
                )
                items = page.get("data") or []
                yield from items
                if not page.get("has_more") or not items:
                    return
                query = {**query, "starting_after": items[-1]["id"]}
        finally:
            self.flush_audit()

    def retrieve(self, resource: str, object_id: str) -> dict[str, Any]:
        """One object by id."""
        return self._request(
            "get", f"{_path(resource)}/{object_id}", object_type=resource, object_id=object_id
        )

    def get(self, path: str) -> dict[str, Any]:
        """One object at a ``/v1/...`` path; :class:`NotFound` when Stripe answers 404."""
        try:
            return self._request("get", path, object_type="stripe_object", buffer_audit=True)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise NotFound(path) from exc
            raise

    def list_charge_refunds(self, charge_id: str) -> list[dict[str, Any]]:
        """All refunds of a charge (``charge.refunded`` stopped embedding them in 2022-11-15)."""
        return list(self.list_all("refunds", params={"charge": charge_id}))

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
        )


def _path(resource: str) -> str:
    """The path of a resource name, or the path itself (``/v1/...``)."""
    if resource.startswith("/v1/"):
        return resource
    try:
        return RESOURCES[resource]
    except KeyError:
        raise ValueError(
            f"unknown Stripe resource {resource!r}; known: {sorted(RESOURCES)}"
        ) from None
