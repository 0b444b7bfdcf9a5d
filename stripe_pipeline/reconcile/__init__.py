"""Nightly reconciliation against the Stripe API (plain Python, no Dagster).

The flow reads as the modules: ``window`` (what to cover), ``backfill`` (missed
events into the queue), ``compare`` (object-level differences, streamed in chunks),
``heal`` (deterministic repairs, everything else to tickets), ``run`` (one run,
all-or-nothing).
"""
