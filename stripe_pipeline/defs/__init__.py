"""Dagster wiring (the orchestration layer): thin definitions over the domain core."""
