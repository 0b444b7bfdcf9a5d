"""Dagster wiring of the SQL models (``dbt_like_sql/``) and the pipeline health checks."""
