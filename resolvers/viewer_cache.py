"""A short-lived, process-local copy of the viewer's profile rows for `me`.

Nearly every screen of a front end asks `me { user { … } organization { … } }`; the
two rows behind it change rarely, yet cost two store round trips per request. This
cache keeps, per gateway app, the profile fields only (user: id, email, name,
email_verified_at, created_at; organization: id, name, slug, created_at), keyed by
id, for `VIEWER_CACHE_SECONDS` (0 turns it off).

- Nothing authorisation-relevant lives here: role and membership come from the token
  as before, permission checks never read this cache. A deactivated user is dropped
  (`forget_user`) and otherwise stops answering within the TTL.
- Writes through this process drop the entry at once (`forget_user`,
  `forget_tenant`, which also drop the cached answers built from it:
  `gateway/response_cache.py`); a read that started before such a write never stores its
  (possibly older) row afterwards (generation check). Other processes see a change
  within the TTL: that is the bound on staleness, stated in the setting and the
  field descriptions.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway import response_cache
from resolvers.context import Services

MAX_ENTRIES = 10_000

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class UserProfile:
    id: int
    email: str
    name: str
    email_verified_at: dt.datetime | None
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Any) -> UserProfile:
        return cls(row.id, row.email, row.name, row.email_verified_at, row.created_at)


@dataclass(frozen=True, slots=True)
class TenantProfile:
    id: int
    name: str
    slug: str
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Any) -> TenantProfile:
        return cls(row.id, row.name, row.slug, row.created_at)


class TTLCache(Generic[V]):
    """id -> value for `ttl` seconds; at most MAX_ENTRIES (the oldest insert goes first)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[float, V]] = {}
        self.generation = 0  # bumped by every forget: reads older than it do not store

    def get(self, key: int, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: int, value: V, expires_at: float, generation: int) -> None:
        if generation != self.generation:
            return  # something was forgotten while this value was being read
        if key not in self._entries and len(self._entries) >= MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (expires_at, value)

    def expires_at(self, key: int) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def forget(self, key: int) -> None:
        self.generation += 1
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class ViewerCache:
    users: TTLCache[UserProfile]
    tenants: TTLCache[TenantProfile]


def cache_of(services: Services) -> ViewerCache:
    """The app's cache (one per Services, so apps over different stores never mix)."""
    cache = services.extras.get("viewer_cache")
    if cache is None:
        cache = services.extras["viewer_cache"] = ViewerCache(TTLCache(), TTLCache())
    return cache  # type: ignore[no-any-return]


async def read_through(
    cache: TTLCache[V], key: int, ttl: float, load: Callable[[], Awaitable[V | None]]
) -> V | None:
    """The cached value, or `load()` stored for `ttl` seconds (misses are not stored)."""
    if ttl <= 0:
        return await load()
    now = time.monotonic()
    hit = cache.get(key, now)
    if hit is not None:
        return hit
    generation = cache.generation
    value = await load()
    if value is not None:
        cache.put(key, value, now + ttl, generation)
    return value


def forget_user(services: Services, user_id: int) -> None:
    """Drop the user's profile and every cached answer of theirs (gateway.response_cache)."""
    cache_of(services).users.forget(user_id)
    response_cache.cache_of(services.extras).forget_user(user_id)


def forget_tenant(services: Services, tenant_id: int) -> None:
    """Drop the organization's profile and every cached answer: its name also shows in
    the `memberships` of people signed in to other organizations."""
    cache_of(services).tenants.forget(tenant_id)
    response_cache.cache_of(services.extras).forget_all()


def fresh_until(services: Services, user_id: int | None, tenant_id: int) -> float | None:
    """When the first of the viewer's cached profiles expires (None: neither is cached).
    An answer built from them must not outlive them, or other processes' changes would
    show only after two TTLs."""
    cache = cache_of(services)
    ends = [cache.tenants.expires_at(tenant_id)]
    if user_id is not None:
        ends.append(cache.users.expires_at(user_id))
    known = [end for end in ends if end is not None]
    return min(known) if known else None
