"""Short-lived, process-local copies of store reads (viewer profiles, resolved
credentials, AI quota state).

Each cache answers for `ttl` seconds; writes through this process `forget` the
entries they change at once, other processes' writes show within the TTL (each
user of this module states that bound). Two rules make that true under concurrency:

- a read that started before a forget never stores its (possibly older) value
  afterwards (the generation check);
- callers that miss the same key at the same time share one read (single flight), so
  a burst of requests costs one store round trip, and a forget makes later callers
  read afresh instead of joining a read that began before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_ENTRIES = 10_000


class TTLCache(Generic[K, V]):
    """key -> value until its expiry; at most `max_entries` (the oldest insert goes first)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._reading: dict[K, asyncio.Future[V | None]] = {}
        self.generation = 0  # bumped by every forget: reads older than it do not store

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: K, value: V, expires_at: float, generation: int) -> None:
        if generation != self.generation:
            return  # something was forgotten while this value was being read
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (expires_at, value)

    def expires_at(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def forget(self, key: K) -> None:
        self.generation += 1
        self._entries.pop(key, None)
        self._reading.pop(key, None)  # later callers read afresh; waiting ones keep theirs

    def forget_where(self, matches: Callable[[K], bool]) -> None:
        self.generation += 1
        for key in [k for k in self._entries if matches(k)]:
            del self._entries[key]
        for key in [k for k in self._reading if matches(k)]:
            del self._reading[key]

    def __len__(self) -> int:
        return len(self._entries)

    async def _load(
        self, key: K, ttl: float, load: Callable[[], Awaitable[V | None]], generation: int
    ) -> V | None:
        try:
            value = await load()
        finally:
            if self._reading.get(key) is asyncio.current_task():
                del self._reading[key]
        if value is not None:
            self.put(key, value, time.monotonic() + ttl, generation)
        return value


async def read_through(
    cache: TTLCache[K, V],
    key: K,
    ttl: float,
    load: Callable[[], Awaitable[V | None]],
    *,
    usable: Callable[[V], bool] | None = None,
) -> V | None:
    """The cached value, or `load()` stored for `ttl` seconds (None is not stored; an
    exception reaches every caller waiting on that read and is not stored either).
    `usable` may refuse a cached value so that it is read again (e.g. a tenant at its
    quota). `ttl <= 0` turns the cache off: every call loads."""
    if ttl <= 0:
        return await load()
    hit = cache.get(key, time.monotonic())
    if hit is not None and (usable is None or usable(hit)):
        return hit
    reading = cache._reading.get(key)
    if reading is None:
        # The generation as of now, not as of when the task first runs: a forget in
        # between must keep this read from storing.
        read = cache._load(key, ttl, load, cache.generation)
        reading = cache._reading[key] = asyncio.ensure_future(read)
    # Shielded: one caller going away does not cancel the read the others wait for.
    return await asyncio.shield(reading)
