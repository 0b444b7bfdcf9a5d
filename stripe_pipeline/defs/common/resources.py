"""Resources shared by every area: the app database (and, later, Stripe and notifiers)."""

from __future__ import annotations

from functools import cached_property

from dagster import ConfigurableResource
from pydantic import PrivateAttr
from sqlalchemy import Engine

from stripe_pipeline.config import load_settings
from stripe_pipeline.db.engine import make_engine


class DatabaseResource(ConfigurableResource):
    """The app database. Empty ``url`` means the configured default (env or embedded SQLite)."""

    url: str = ""
    _engine: Engine | None = PrivateAttr(default=None)

    @cached_property
    def resolved_url(self) -> str:
        return self.url or load_settings().database_url

    def get_engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.resolved_url)
        return self._engine

    def teardown_after_execution(self, context) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class StripeApiResource(ConfigurableResource):
    """The rate-limited, audited Stripe API client (``STRIPE_API_KEY``, ``STRIPE_API_BASE``).

    Empty ``api_key``/``api_base`` fall back to the environment at run time, so the code
    location loads without a key; ``requests_per_second`` 0 means Stripe's limit for the key.
    """

    api_key: str = ""
    api_base: str = ""
    max_network_retries: int = 3
    requests_per_second: float = 0.0
    _client: object | None = PrivateAttr(default=None)

    def get_client(self, audit_engine: Engine | None = None, actor: str = "dagster"):
        """One client per resource instance, so every thread in a run shares its limiter."""
        from stripe_pipeline.stripe_api.client import StripeApi

        if self._client is None:
            settings = load_settings()
            api_key = self.api_key or settings.stripe_api_key
            if not api_key:
                raise ValueError("STRIPE_API_KEY is not set")
            self._client = StripeApi(
                api_key,
                api_base=self.api_base or settings.stripe_api_base,
                max_network_retries=self.max_network_retries,
                requests_per_second=self.requests_per_second or None,
                audit_engine=audit_engine,
                actor=actor,
            )
        return self._client

    def teardown_after_execution(self, context) -> None:
        if self._client is not None:
            self._client.flush_audit()
            self._client = None


# Every area binds this one instance under the key "stripe_api": Definitions.merge
# accepts a resource key in several areas only when it is the same object.
STRIPE_API_RESOURCE_KEY = "stripe_api"
stripe_api_resource = StripeApiResource()
