"""Rate limits on the `limits` library: in memory by default, shared through Redis.

One limiter serves inbound budgets (per principal, per address, webhooks, login
attempts) and, later, outbound ones per provider. With `REDIS_URL` every process
draws from the same budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from kit.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


@lru_cache(maxsize=256)
def parse_limit(spec: str) -> RateLimitItem:
    return parse(spec)


class LocalWindows:
    """The sliding window counter in this process's memory, for the inbound budgets.

    The same arithmetic as limits' SlidingWindowCounterRateLimiter (a counter per window
    of the limit's length; the previous window's count weighted by how much of it still
    overlaps the last `expiry` seconds), done synchronously: limits' async memory storage
    spends most of a hit on coroutines, per-key locks and two passes (hit, then stats),
    where one event-loop thread needs none of it (bench_me measures the edge). Windows
    older than the previous one are dropped by a sweep at most once a minute.
    """

    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int, int], int] = {}  # (key, expiry, window) -> hits
        self._next_sweep = 0.0

    def _read(self, key: str, expiry: int, now: float) -> tuple[int, int, float, int]:
        """(current window index, current count, previous count's remaining weight in
        seconds, previous count)."""
        index = int(now / expiry)
        current = self._counts.get((key, expiry, index), 0)
        previous = self._counts.get((key, expiry, index - 1), 0)
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        return index, current, previous_ttl, previous

    def _decision(self, item: RateLimitItem, key: str, allowed: bool, now: float) -> Decision:
        expiry = item.get_expiry()
        _, current, previous_ttl, previous = self._read(key, expiry, now)
        weighted = previous * previous_ttl / expiry + current
        remaining = max(0, item.amount - math.floor(weighted))
        if not (previous or current):
            return Decision(allowed, item.amount, remaining, now)
        previous_reset = previous_ttl % (expiry / previous) if previous else math.inf
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        current_reset = current_ttl % expiry if current else math.inf
        return Decision(allowed, item.amount, remaining, now + min(previous_reset, current_reset))

    def hit(
        self, item: RateLimitItem, identity: tuple[str, ...], cost: int, now: float
    ) -> Decision:
        if now >= self._next_sweep:
            self._sweep(now)
        key = item.key_for(*identity)
        expiry = item.get_expiry()
        index, current, previous_ttl, previous = self._read(key, expiry, now)
        weighted = previous * previous_ttl / expiry + current
        allowed = cost <= item.amount and math.floor(weighted) + cost <= item.amount
        if allowed:
            self._counts[(key, expiry, index)] = current + cost
        return self._decision(item, key, allowed, now)

    def peek(self, item: RateLimitItem, identity: tuple[str, ...], now: float) -> Decision:
        key = item.key_for(*identity)
        expiry = item.get_expiry()
        _, current, previous_ttl, previous = self._read(key, expiry, now)
        ok = previous * previous_ttl / expiry + current < item.amount
        return self._decision(item, key, ok, now)

    def clear(self, item: RateLimitItem, identity: tuple[str, ...]) -> None:
        key = item.key_for(*identity)
        for entry in [e for e in self._counts if e[0] == key]:
            del self._counts[entry]

    def reset(self) -> None:
        self._counts.clear()

    def _sweep(self, now: float) -> None:
        """Drop counters of windows that can no longer be current or previous."""
        self._next_sweep = now + self.SWEEP_SECONDS
        stale = [e for e in self._counts if e[2] < int(now / e[1]) - 1]
        for entry in stale:
            del self._counts[entry]


class RateLimiter:
    """Hit a named budget for an identity; answers a Decision with the header values."""

    def __init__(self, redis_url: str = "", *, prefix: str = "switchboard") -> None:
        storage: Storage
        if redis_url:
            uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            storage = RedisStorage(uri, key_prefix=f"{prefix}:rl")
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.backend = "redis" if redis_url else "memory"
        # Sliding window counter: no burst of 2x at a window edge (which fixed windows
        # allow), and O(1) per hit: two counters per key. The moving window keeps every
        # hit (a 1000/hour budget is a 1000-entry list per caller) and its in-memory
        # storage sends each expiry sweep through a thread, per request.
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        # Inbound budgets without Redis: the same counter, synchronously (`storage` stays
        # limits' for the providers' outbound budgets, which use other keys).
        self._local = LocalWindows() if not redis_url else None
        # Small security budgets (login attempts) must be exact: the sliding counter's
        # weighting lets a few more through just after a window edge. Few hits, so the
        # moving window's cost does not matter there.
        self._exact = MovingWindowRateLimiter(storage)

    async def hit(self, spec: str, *identity: str, cost: int = 1, exact: bool = False) -> Decision:
        item = parse_limit(spec)
        if exact:
            ok = await self._exact.hit(item, *identity, cost=cost)
            stats = await self._exact.get_window_stats(item, *identity)
            return Decision(ok, item.amount, stats.remaining, stats.reset_time)
        if self._local is not None:
            return self._local.hit(item, identity, cost, time.time())
        allowed = await self._strategy.hit(item, *identity, cost=cost)
        stats = await self._strategy.get_window_stats(item, *identity)
        return Decision(allowed, item.amount, stats.remaining, stats.reset_time)

    async def enforce(
        self, spec: str, *identity: str, message: str | None = None, exact: bool = False
    ) -> Decision:
        decision = await self.hit(spec, *identity, exact=exact)
        if not decision.allowed:
            raise RateLimited(decision.retry_after, message or "Too many requests.")
        return decision

    async def peek(self, spec: str, *identity: str) -> Decision:
        item = parse_limit(spec)
        if self._local is not None:
            return self._local.peek(item, identity, time.time())
        ok = await self._strategy.test(item, *identity)
        stats = await self._strategy.get_window_stats(item, *identity)
        return Decision(ok, item.amount, stats.remaining, stats.reset_time)

    async def clear(self, spec: str, *identity: str) -> None:
        if self._local is not None:
            self._local.clear(parse_limit(spec), identity)
        await self._strategy.clear(parse_limit(spec), *identity)

    async def reset_all(self) -> None:
        if self._local is not None:
            self._local.reset()
        await self.storage.reset()

    async def check_storage(self) -> bool:
        return bool(await self.storage.check())
