"""Circuit breakers for outbound calls: in memory, or shared by every process via Redis.

A breaker is named (`resend`, or `resend:cred:<fingerprint>` for one credential).
It counts consecutive failures; at `threshold` it opens for `cooldown` seconds and
every call fails fast. After the cool-down exactly one caller gets a probe slot
(half-open) while the others still fail fast; the probe's success closes the
breaker, its failure opens it for another cool-down. A probe that never reports
back (process died) loses its slot after `probe_timeout`.

Redis model (one hash per breaker, `<prefix>:breaker:<name>`, with a TTL so dead
breakers vanish): fields `state` (open | half_open; absent means closed),
`failures`, `until` (end of the cool-down or probe slot, Redis server time). Each
transition is one small Lua script, so processes never race on read-modify-write
and clocks come from one place. Closed breakers cost nothing in Redis.

Hot path: `clear(name)` answers without I/O or a coroutine whether a breaker is known
closed with no failure on record — then asking it would admit and a success would
change nothing, so the layer skips both (`providers.admission.Gate.clear`). In memory
that is one dict lookup. In Redis, a closed answer is cached in-process for `cache_ttl`
seconds (default 0.5), so a busy process asks Redis a few times a second, not once per
call. A failure seen locally always goes to Redis at once. The price is that another
process learns an open breaker up to `cache_ttl` late — a handful of extra calls
against a failing vendor, which the breaker exists to bound, not to forbid.

Why not a library: purgatory (asyncio, Redis backend) stores a circuit as a JSON
blob updated with GET then SET — two processes can overwrite each other — and
admits every call while half-open; aiobreaker has had no release since 2021 and
its Redis storage is synchronous. The whole state machine here is ~40 lines of Lua.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from redis.exceptions import RedisError

log = logging.getLogger("switchboard.providers")


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


STATE_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may I call?": allowed (maybe as the probe), or the time to wait."""

    allowed: bool
    probe: bool = False
    retry_after: float | None = None
    state: BreakerState = BreakerState.CLOSED


ADMIT = Admission(True)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: int = 5  # consecutive failures that open the breaker
    cooldown: float = 30.0  # seconds open before a probe is let through
    probe_timeout: float = 30.0  # a probe that never reports back frees its slot after this
    cache_ttl: float = 0.5  # how long a process trusts a "closed" answer (Redis backend)


class BreakerStore(Protocol):
    backend: str
    # True while no breaker of this store has anything on record, so `clear(name)` is
    # True for every name: one attribute read on the hot path. False: ask `clear`.
    all_clear: bool

    def clear(self, name: str) -> bool:
        """Known, without I/O, to be closed with no failure on record (False: ask)."""
        ...

    async def admit(self, name: str, policy: BreakerPolicy) -> Admission: ...

    async def success(self, name: str, policy: BreakerPolicy, probe: bool) -> BreakerState: ...

    async def failure(self, name: str, policy: BreakerPolicy, probe: bool) -> BreakerState: ...

    async def state(self, name: str) -> tuple[BreakerState, int]: ...

    async def aclose(self) -> None: ...


# In memory --------------------------------------------------------------------------


@dataclass(slots=True)
class _Local:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    until: float = 0.0


class MemoryBreakerStore:
    """One process's breakers. Same state machine as the Redis store."""

    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._breakers: dict[str, _Local] = {}
        self.all_clear = True  # kept equal to `not self._breakers`
        # Injected by tests, so a cooldown passes without waiting for it.
        self.clock = clock

    def clear(self, name: str) -> bool:
        # A breaker is kept only while it has failures on record or is open.
        return name not in self._breakers

    async def admit(self, name: str, policy: BreakerPolicy) -> Admission:
        b = self._breakers.get(name)
        if b is None or b.state is BreakerState.CLOSED:
            return ADMIT
        now = self.clock()
        if now >= b.until:  # cool-down over (or the last probe vanished): this call probes
            b.state = BreakerState.HALF_OPEN
            b.until = now + policy.probe_timeout
            return Admission(True, probe=True, state=BreakerState.HALF_OPEN)
        return Admission(False, retry_after=b.until - now, state=b.state)

    async def success(self, name: str, policy: BreakerPolicy, probe: bool) -> BreakerState:
        b = self._breakers.get(name)
        if b is None:
            return BreakerState.CLOSED
        if b.state is BreakerState.OPEN and not probe:
            return b.state  # a slow call from before the opening proves nothing
        del self._breakers[name]
        self.all_clear = not self._breakers
        return BreakerState.CLOSED

    async def failure(self, name: str, policy: BreakerPolicy, probe: bool) -> BreakerState:
        b = self._breakers.setdefault(name, _Local())
        self.all_clear = False
        b.failures += 1
        if (
            probe
            or b.state is BreakerState.HALF_OPEN
            or (b.state is BreakerState.CLOSED and b.failures >= policy.threshold)
        ):
            b.state = BreakerState.OPEN
            b.until = self.clock() + policy.cooldown
        return b.state

    async def state(self, name: str) -> tuple[BreakerState, int]:
        b = self._breakers.get(name)
        if b is None:
            return BreakerState.CLOSED, 0
        if b.state is BreakerState.OPEN and self.clock() >= b.until:
            return BreakerState.HALF_OPEN, b.failures  # the next call will probe
        return b.state, b.failures

    async def aclose(self) -> None:
        return None


# Redis ------------------------------------------------------------------------------

# All times are Redis server time in milliseconds (one clock for every process).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] breaker; ARGV[1] probe_timeout ms. -> {verdict, ms_left, failures}
_ADMIT = (
    _NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'failures')
local state, untl, failures = s[1], tonumber(s[2] or '0'), tonumber(s[3] or '0')
if not state then return {'closed', 0, failures} end
if now >= untl then
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', now + tonumber(ARGV[1]))
  return {'probe', 0, failures}
end
return {state, untl - now, failures}
"""
)

# KEYS[1]; ARGV threshold, cooldown ms, ttl s, probe(0|1) -> state
_FAILURE = (
    _NOW
    + """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[4] == '1' or state == 'half_open' or (not state and failures >= tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[2]))
  state = 'open'
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return state or 'closed'
"""
)

# KEYS[1]; ARGV probe(0|1) -> state
_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' and ARGV[1] ~= '1' then return 'open' end
redis.call('DEL', KEYS[1])
return 'closed'
"""


class RedisBreakerStore:
    """Breakers shared by every process that uses the same Redis and prefix."""

    backend = "redis"
    all_clear = False  # closed answers expire: each name is asked (`clear`)

    def __init__(self, redis_url: str, *, prefix: str = "switchboard") -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.from_url(
            redis_url, socket_connect_timeout=1.0, socket_timeout=1.0
        )
        self._prefix = f"{prefix}:breaker:"
        self._admit = self._redis.register_script(_ADMIT)
        self._failure = self._redis.register_script(_FAILURE)
        self._success = self._redis.register_script(_SUCCESS)
        # name -> monotonic deadline until which "closed" is trusted without asking Redis
        self._closed_until: dict[str, float] = {}
        self._known_failures: dict[str, int] = {}

    def _key(self, name: str) -> str:
        return self._prefix + name

    def clear(self, name: str) -> bool:
        # Trusted closed (cached) and no failure of ours on record since Redis said so.
        return self._closed_until.get(name, 0.0) > time.monotonic() and not (
            self._known_failures.get(name)
        )

    async def admit(self, name: str, policy: BreakerPolicy) -> Admission:
        now = time.monotonic()
        if self._closed_until.get(name, 0.0) > now:
            return ADMIT
        try:
            verdict, ms_left, failures = await self._admit(
                keys=[self._key(name)], args=[int(policy.probe_timeout * 1000)]
            )
        except RedisError as exc:
            # Redis down: fail open (calls go on without a shared breaker) rather than
            # turning a Redis outage into an outage of every provider.
            _store_down(exc)
            return ADMIT
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        self._known_failures[name] = int(failures)
        if verdict == "closed":
            if policy.cache_ttl > 0:
                self._closed_until[name] = now + policy.cache_ttl
            return ADMIT
        if verdict == "probe":
            return Admission(True, probe=True, state=BreakerState.HALF_OPEN)
        return Admission(False, retry_after=int(ms_left) / 1000, state=BreakerState(verdict))

    async def success(self, name: str, policy: BreakerPolicy, probe: bool) -> BreakerState:
        # Closed with no failures on record: nothing to reset, skip the round trip.
        if not probe and not self._known_failures.get(name):
            return BreakerState.CLOSED
        try:
            state = await self._success(keys=[self._key(name)], args=[1 if probe else 0])
        except RedisError as exc:
            _store_down(exc)
            return BreakerState.CLOSED
        state = state.decode() if isinstance(state, bytes) else state
        if state == "closed":
            self._known_failures[name] = 0
        return BreakerState(state)

    async def failure(self, name: str, policy: BreakerPolicy, probe: bool) -> BreakerState:
        self._closed_until.pop(name, None)
        ttl = int(policy.cooldown + policy.probe_timeout + 3600)
        try:
            state = await self._failure(
                keys=[self._key(name)],
                args=[policy.threshold, int(policy.cooldown * 1000), ttl, 1 if probe else 0],
            )
        except RedisError as exc:
            _store_down(exc)
            return BreakerState.CLOSED
        state = state.decode() if isinstance(state, bytes) else state
        self._known_failures[name] = self._known_failures.get(name, 0) + 1
        return BreakerState(state)

    async def state(self, name: str) -> tuple[BreakerState, int]:
        try:
            raw = await self._redis.hmget(self._key(name), "state", "until", "failures")
            seconds, micros = await self._redis.time()
        except RedisError as exc:
            _store_down(exc)
            return BreakerState.CLOSED, 0
        state_b, until_b, failures_b = raw
        failures = int(failures_b or 0)
        if not state_b:
            return BreakerState.CLOSED, failures
        now_ms = seconds * 1000 + micros // 1000
        if state_b == b"open" and now_ms >= int(until_b or 0):
            return BreakerState.HALF_OPEN, failures
        return BreakerState(state_b.decode()), failures

    async def aclose(self) -> None:
        await self._redis.aclose()


_last_warning = 0.0


def _store_down(exc: Exception) -> None:
    """Log (at most every 10 s) that the shared breaker store is unreachable."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning > 10:
        _last_warning = now
        log.warning("breaker store unreachable; breakers fail open: %s", type(exc).__name__)


def make_breaker_store(redis_url: str = "", *, prefix: str = "switchboard") -> BreakerStore:
    return RedisBreakerStore(redis_url, prefix=prefix) if redis_url else MemoryBreakerStore()
