"""The standalone store over one SQLite file: ``SqliteStore`` (store.py), one module per concept."""

from herald.adapters.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
