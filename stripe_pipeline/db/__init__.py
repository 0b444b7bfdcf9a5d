"""Schema, engine and migrations of the app database."""
