"""The cluster store over MongoDB: ``MongoStore`` (store.py), one module per concept."""

from herald.adapters.store.mongo.store import MongoStore

__all__ = ["MongoStore"]
