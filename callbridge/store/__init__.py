"""Persistence. SQLite by default (one file, WAL); each module owns its tables."""
