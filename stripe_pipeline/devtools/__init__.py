"""Developer tools: ``stripe-pipeline dev``, a one-command local demo on a fake Stripe.

Nothing here is imported by the pipeline's runtime code. The demo shells out to
localstripe (GPL-3.0, a dev extra), the receiver and ``dagster dev`` as separate
processes, so neither localstripe nor Dagster is imported by this package's CLI.
"""
