"""Personal data and retention in Dagster: the erase job and the daily privacy run."""
