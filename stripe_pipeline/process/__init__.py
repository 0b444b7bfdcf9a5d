"""Processing landed events into domain tables: claim, apply, retry, escalate."""
