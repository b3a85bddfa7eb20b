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
  `kit/response_cache.py`); a read that started before such a write never stores its
  (possibly older) row afterwards (generation check). Other processes see a change
  within the TTL: that is the bound on staleness, stated in the setting and the
  field descriptions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kit.ttl_cache import TTLCache
from resolvers.context import Services


@dataclass(frozen=True, slots=True)
class UserProfile:
    id: int
    email: str
    name: str
    email_verified_at: dt.datetime | None
    created_at: dt.datetime
    phone_verified_at: dt.datetime | None = None

    @classmethod
    def of(cls, row: Any) -> UserProfile:
        return cls(
            row.id,
            row.email,
            row.name,
            row.email_verified_at,
            row.created_at,
            getattr(row, "phone_verified_at", None),
        )


@dataclass(frozen=True, slots=True)
class TenantProfile:
    id: int
    name: str
    slug: str
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Any) -> TenantProfile:
        return cls(row.id, row.name, row.slug, row.created_at)


@dataclass
class ViewerCache:
    users: TTLCache[int, UserProfile]
    tenants: TTLCache[int, TenantProfile]


def cache_of(services: Services) -> ViewerCache:
    """The app's cache (one per Services, so apps over different stores never mix)."""
    if services.viewer_cache is None:
        services.viewer_cache = ViewerCache(TTLCache(), TTLCache())
    return services.viewer_cache


def forget_user(services: Services, user_id: int) -> None:
    """Drop the user's profile and every cached answer of theirs (kit.response_cache)."""
    cache_of(services).users.forget(user_id)
    services.response_cache.forget_user(user_id)


def forget_tenant(services: Services, tenant_id: int) -> None:
    """Drop the organization's profile and every cached answer: its name also shows in
    the `memberships` of people signed in to other organizations."""
    cache_of(services).tenants.forget(tenant_id)
    services.response_cache.forget_all()


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
