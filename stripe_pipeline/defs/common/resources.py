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
