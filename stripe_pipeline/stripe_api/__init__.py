"""The Stripe API client every area uses (reconciliation, refunds, payment recovery)."""

from stripe_pipeline.stripe_api.client import RESOURCES, StripeApi

__all__ = ["RESOURCES", "StripeApi"]
