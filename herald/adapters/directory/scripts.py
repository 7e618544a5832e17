"""The directory's Lua scripts: the steps that must be atomic on the Redis server.

Each touches only keys of one app (the ``{app}`` hash tag), so a Redis Cluster runs them
unchanged; whatever spans apps or nodes goes in plain pipelines beside them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Script:
    """A script run by EVALSHA; ``sha`` is what the server knows it by once loaded."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Users' connections arrive, any number of users of one app in one call (a push node's
# handshakes of one event-loop turn). Returns a 1 for each user whose hash was empty
# before (every field in it is one this call added): that user came online, else 0.
# HSET and HLEN in one script, so two nodes adding a user's first two connections at
# once cannot both see an empty hash. The hash does not expire (PERSIST drops a TTL an
# earlier version set): connections are removed at disconnect or by the reaper, never by
# a heartbeat that failed to come.
# KEYS: online sorted set, then each user's conns hash. ARGV: online-until epoch ms
# ("until removed"), then per user: user id, number of connections, conn id / value pairs.
ADD_CONNECTIONS = Script("""
local firsts = {}
local at = 2
for i = 2, #KEYS do
  local fields = 2 * tonumber(ARGV[at + 1])
  local added = redis.call('HSET', KEYS[i], unpack(ARGV, at + 2, at + 1 + fields))
  firsts[i - 1] = added == redis.call('HLEN', KEYS[i]) and 1 or 0
  redis.call('PERSIST', KEYS[i])
  redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[at])
  at = at + 2 + fields
end
return firsts
""")

# One user's connections go. Returns 1 if the user has none left and was still in the
# online set: the user went offline. Gating on ZREM (not on HDEL's count) reports a user
# whose hash already expired (a crashed node reaped late) exactly once, however many
# callers get there.
# KEYS: conns hash, online sorted set. ARGV: user id, then conn ids.
REMOVE_CONNECTIONS = Script("""
redis.call('HDEL', KEYS[1], unpack(ARGV, 2))
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
""")

# Token bucket on the server's clock (TIME), so callers whose clocks disagree still share
# one bucket. Absent means full. A take needs min(cost, burst) tokens: one larger than
# the burst waits for a full bucket and leaves it in debt (negative), so it is not refused
# forever and the long-run rate still holds. A refusal writes nothing.
# KEYS: bucket hash. ARGV: cost, rate per second, burst. Returns {allowed, retry after s}.
TAKE = Script("""
local cost = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
end
local need = math.min(cost, burst)
if tokens < need then
  return {0, string.format('%.17g', (need - tokens) / rate)}
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {1, '0'}
""")

ALL = (ADD_CONNECTIONS, REMOVE_CONNECTIONS, TAKE)
