"""Persistence: evaluation runs (SQLite, embedded by default)."""
