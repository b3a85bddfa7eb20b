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
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from gateway.errors import RateLimited


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

    async def hit(self, spec: str, *identity: str, cost: int = 1) -> Decision:
        item = parse_limit(spec)
        allowed = await self._strategy.hit(item, *identity, cost=cost)
        stats = await self._strategy.get_window_stats(item, *identity)
        return Decision(allowed, item.amount, stats.remaining, stats.reset_time)

    async def enforce(self, spec: str, *identity: str, message: str | None = None) -> Decision:
        decision = await self.hit(spec, *identity)
        if not decision.allowed:
            raise RateLimited(decision.retry_after, message or "Too many requests.")
        return decision

    async def peek(self, spec: str, *identity: str) -> Decision:
        item = parse_limit(spec)
        ok = await self._strategy.test(item, *identity)
        stats = await self._strategy.get_window_stats(item, *identity)
        return Decision(ok, item.amount, stats.remaining, stats.reset_time)

    async def clear(self, spec: str, *identity: str) -> None:
        await self._strategy.clear(parse_limit(spec), *identity)

    async def reset_all(self) -> None:
        await self.storage.reset()

    async def check_storage(self) -> bool:
        return bool(await self.storage.check())
