"""Dagster wiring of event processing: the domain-table assets, their job and sensor."""
