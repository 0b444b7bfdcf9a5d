"""The drills' Stripe front is the dev tooling's (one implementation, kept there)."""

from stripe_pipeline.devtools.stripe_peer import StripePeer

__all__ = ["StripePeer"]
