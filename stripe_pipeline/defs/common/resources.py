"""Resources shared by every area: the app database, processing settings, the notifier."""

from __future__ import annotations

from dataclasses import asdict
from functools import cached_property
from typing import Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr
from sqlalchemy import Engine

from stripe_pipeline.config import (
    ProcessingOptions,
    load_notify_urls,
    load_processing_options,
    load_settings,
)
from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine


class DatabaseResource(ConfigurableResource):
    """The app database. Empty ``url`` means the configured default (env or embedded SQLite)."""

    url: str = ""
    _engine: Engine | None = PrivateAttr(default=None)

    @cached_property
    def resolved_url(self) -> str:
        return self.url or load_settings().database_url

    def get_engine(self) -> Engine:
        """The engine, once the schema is known to be at head.

        The embedded SQLite default migrates itself (a newcomer's first run just
        works); any other database at an older revision fails the run with the
        command to run, instead of failing later on a missing column.
        """
        if self._engine is None:
            engine = make_engine(self.resolved_url)
            settings = load_settings()
            embedded = settings.is_embedded_sqlite and self.resolved_url == settings.database_url
            migrate.ensure_schema(engine, auto_migrate=embedded)
            self._engine = engine
        return self._engine

    def teardown_after_execution(self, context) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


_DEFAULTS = ProcessingOptions()


class ProcessingSettings(ConfigurableResource):
    """Deployment defaults of event processing; a run's config may override any of them.

    Every field can be bound to an ``EnvVar`` (``EnvVar.int("...")``); ``from_env()``
    reads the documented ``STRIPE_PIPELINE_*`` variables with these defaults, so an
    unset variable never breaks loading the code location.
    """

    # defaults and meanings: stripe_pipeline.config.ProcessingOptions
    batch_size: int = _DEFAULTS.batch_size
    workers: int = _DEFAULTS.workers
    max_batches: int = _DEFAULTS.max_batches
    lease_seconds: int = _DEFAULTS.lease_seconds
    linger_seconds: float = _DEFAULTS.linger_seconds
    retry_base_seconds: float = _DEFAULTS.retry_base_seconds
    retry_factor: float = _DEFAULTS.retry_factor
    retry_cap_seconds: float = _DEFAULTS.retry_cap_seconds
    retry_max_retries: int = _DEFAULTS.retry_max_retries
    retry_jitter: str = _DEFAULTS.retry_jitter

    @classmethod
    def from_env(cls) -> ProcessingSettings:
        return cls(**asdict(load_processing_options()))


class NotifierResource(ConfigurableResource):
    """Where critical support tickets are announced (apprise URLs or plain webhooks).

    ``urls`` is comma-separated; empty means ``STRIPE_PIPELINE_NOTIFY_URLS`` and, when
    that is unset too, log only.
    """

    urls: str = ""

    @property
    def resolved_urls(self) -> list[str]:
        if self.urls:
            return [u.strip() for u in self.urls.split(",") if u.strip()]
        return load_notify_urls()

    def get_notifier(self) -> Any:
        """The domain core's notifier (imported lazily: optional transports stay optional)."""
        from stripe_pipeline.support.notify import build_notifier

        return build_notifier(self.resolved_urls)


class StripeApiResource(ConfigurableResource):
    """The rate-limited, audited Stripe API client (``STRIPE_API_KEY``, ``STRIPE_API_BASE``).

    Empty ``api_key``/``api_base`` fall back to the environment at run time, so the code
    location loads without a key; ``requests_per_second`` 0 means Stripe's limits for
    the key (100/s live, 25/s test, 25/s per endpoint). Given the app database
    (``audit_engine``), the limit is shared through it by every run, process and host
    (``shared_rate_limit``): two runs together stay under Stripe's limit.
    """

    api_key: str = ""
    api_base: str = ""
    max_network_retries: int = 3
    requests_per_second: float = 0.0
    shared_rate_limit: bool = True
    _client: object | None = PrivateAttr(default=None)

    def get_client(
        self,
        audit_engine: Engine | None = None,
        actor: str = "dagster",
        limit_engine: Engine | None = None,
    ):
        """One client per resource instance, so every thread in a run shares its limiter.

        ``limit_engine``: the database the limit is shared through when API calls are
        not audited there (default: ``audit_engine``).
        """
        from stripe_pipeline.stripe_api.client import StripeApi
        from stripe_pipeline.stripe_api.ratelimit import ENDPOINT_RATE, RateLimiter

        if self._client is None:
            settings = load_settings()
            api_key = self.api_key or settings.stripe_api_key
            if not api_key:
                raise ValueError("STRIPE_API_KEY is not set")
            rate = self.requests_per_second or None
            limiter = None
            limit_engine = limit_engine or audit_engine
            if self.shared_rate_limit and limit_engine is not None:
                limiter = RateLimiter.shared(
                    limit_engine, api_key, account_rate=rate, endpoint_rate=rate or ENDPOINT_RATE
                )
            self._client = StripeApi(
                api_key,
                api_base=self.api_base or settings.stripe_api_base,
                max_network_retries=self.max_network_retries,
                requests_per_second=None if limiter else rate,
                limiter=limiter,
                audit_engine=audit_engine,
                actor=actor,
            )
        return self._client

    def teardown_after_execution(self, context) -> None:
        if self._client is not None:
            self._client.flush_audit()
            self._client.limiter.close()
            self._client = None


# Every area binds this one instance under the key "stripe_api": Definitions.merge
# accepts a resource key in several areas only when it is the same object.
STRIPE_API_RESOURCE_KEY = "stripe_api"
stripe_api_resource = StripeApiResource()
