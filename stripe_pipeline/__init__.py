"""Stripe webhook and reconciliation pipeline.

The domain core (everything here except ``stripe_pipeline.defs`` and
``stripe_pipeline.definitions``) is plain Python: it never imports dagster or flask.
"""

__version__ = "0.1.0"
