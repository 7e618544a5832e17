"""The directory on Redis: one hash per user, one heartbeat key per node.

Layout (every name from ``herald.names.Names``):

- ``conns_key(app, user)``: hash conn_id -> ``[node_id, since, device]`` (compact JSON),
  without expiry: a connection is removed at disconnect, by the reaper after its node's
  heartbeat expired, or when its node restarts (``reset_node``);
- ``online_key(app)``: sorted set user_id -> online-until (epoch ms; ``ONLINE_UNTIL_REMOVED``
  now, a heartbeat deadline in earlier versions): who has been announced online. A user
  enters it with its first connection and leaves it with its last, each inside one Lua
  script (``herald.directory.scripts``), so online and offline reports alternate even
  when nodes race or crash;
- ``node_key(node)``: the node's heartbeat, ``SET ... PX ttl``; a node without it is dead,
  whatever the hashes still say. Refreshing it is the whole heartbeat (``beat``): O(1);
- ``nodes_key``: the set of every node id that registered (``live_nodes`` filters it);
- ``node_conns_key(node)`` / ``node_channels_key(node)``: what a node wrote, kept without
  expiry, so whoever reaps the node after a crash knows what to remove;
- ``channel_nodes_key(app, channel)``: hash node_id -> number of its readers;
- ``rate_key(app)``: the app's token bucket.

Reads never trust a route on its own: lookups check the heartbeat of every node they
found, so a crashed node stops being routed to when its heartbeat expires, not when the
last of its users' hashes does. Writes are idempotent re-assertions, which is what lets a
flushed Redis heal at the next heartbeat.

Three ways to reach Redis (``HERALD_REDIS_MODE``), the same commands in each:
- ``single``: one server (or a proxy in front of several), through a blocking pool;
- ``cluster``: a Redis Cluster through redis-py's cluster client, which keeps the slot map
  and follows MOVED and ASK. Every Lua script touches the keys of one app only, all with
  the ``{app}`` hash tag, so one slot; the pipelines are not transactions, so a pipeline
  may span slots (the client splits it per node) and the node-wide keys, which carry no
  tag, are only ever one key per command (``_alive``, ``_forget_node``). Scripts are
  loaded on every primary; a replica promoted by a failover does not have them, answers
  NOSCRIPT, and ``_execute`` loads them again;
- ``sentinel``: the primary that the sentinels name, asked again whenever a connection
  fails (a failover moved it); a demoted primary answering READONLY counts as a lost
  connection.
While a primary fails over, calls fail with ``Unavailable`` (callers retry: dispatch holds
its batch, push re-asserts at its next heartbeat) and succeed again once the replica has
taken over: a few seconds with a cluster node timeout of a few seconds.
"""

from __future__ import annotations

from herald.adapters.directory.base import Directory
from herald.adapters.directory.redis.connections import RedisConnections
from herald.adapters.directory.redis.operations import RedisOperations
from herald.adapters.directory.redis.presence import RedisPresence
from herald.adapters.directory.redis.routing import RedisRouting


class RedisDirectory(RedisConnections, RedisRouting, RedisPresence, RedisOperations, Directory):
    """Every part of the directory, each from its own module, over one client (``RedisClient``,
    whose constructor takes the URL, the names and the mode)."""
