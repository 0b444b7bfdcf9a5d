"""The webhook receiver: a thin Flask app over ``stripe_pipeline.land``.

It lands raw Stripe events durably and answers fast; everything else happens later,
in Dagster. It must never import dagster (workers stay small and start fast).
Importing the package is free of side effects: ``create_app`` is loaded on first use,
so ``receiver.server`` can prepare the Prometheus folder before prometheus_client loads.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from receiver.app import create_app

        return create_app
    raise AttributeError(name)
