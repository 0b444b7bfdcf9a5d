"""Pipeline health: checks that raise and close tickets, gauges for Prometheus.

Plain Python over the app database; Dagster (``stripe_pipeline.defs.models``) and the
receiver's ``/metrics`` wrap these functions.
"""
