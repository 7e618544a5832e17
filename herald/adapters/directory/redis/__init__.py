"""The directory on Redis: ``RedisDirectory`` (directory.py), one module per part."""

from herald.adapters.directory.redis.directory import RedisDirectory

__all__ = ["RedisDirectory"]
