"""The authority a caller holds now, not the one its token was signed with.

An access token carries a role for ACCESS_TOKEN_TTL_SECONDS; a member removed, demoted or
deactivated meanwhile must lose that authority on the very next request of every token
and API key of theirs (open sockets included: `gateway/http/websocket.py`). So:

- `current(services, principal)` runs on every request after the token or key is
  verified. It looks up the member's *standing* (membership id and role; none once
  removed or deactivated) in a process-local cache keyed by (user, tenant), for at most
  AUTHZ_CACHE_SECONDS. A user's token then acts with the standing's role (a demotion
  applies at once, old token or not); no standing, or a token issued for an earlier
  membership (removed, then invited again), is UNAUTHENTICATED. An API key acts with its
  own role capped at its creator's current role (`kit.roles.cap`): a key never holds
  more than the member who made it.
- An access token also dies with its session (refresh-token family): revoked by logout,
  refresh-token reuse, a password change or reset. Same cache and TTL, keyed by
  (user, family).
- `changed(...)` is called after commit by every write to a standing (role change,
  removal, leaving, joining, deactivation), session revocation and key revocation: it
  drops this process's entries and the user's cached answers (`kit/response_cache.py`
  keys on role), wakes this process's sockets of that member, and publishes on the bus
  (channel `authz`) so every other process does the same at once (`listen`). The TTL
  only bounds a lost bus message; a hit costs a dict lookup, so `me` stays fast.
- `confirm(ctx, permission)`: whatever grants or changes authority (members,
  invitations, API keys, credentials, webhook endpoints, organization settings) reads
  the caller's standing from the store, never the cache, inside its own transaction when
  it has one; it also replaces `ctx.principal` with that fresh reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from kit.errors import Forbidden, Unauthenticated
from kit.roles import Role, allowed, cap
from kit.security import Principal
from kit.ttl_cache import TTLCache, read_through
from models.accounts import RefreshToken
from models.apikeys import ApiKey
from models.members import Membership
from models.tenants import Tenant
from resolvers import viewer_cache
from resolvers.context import Context, Services
from resolvers.events import get_bus

log = logging.getLogger("switchboard.authority")

CHANNEL = "authz"


@dataclass(frozen=True, slots=True)
class Standing:
    """A member's current membership id and role; both None when they have none (never
    joined, removed, or their account is deactivated)."""

    membership_id: int | None
    role: Role | None


GONE = Standing(None, None)

Watcher = Callable[[], None]


@dataclass
class Authority:
    """Per app (one per Services): the standing cache and the sockets' watchers."""

    standings: TTLCache[tuple[int, int], Standing] = field(default_factory=TTLCache)
    # (user_id, session family) -> whether the session is still live (not revoked)
    sessions: TTLCache[tuple[int, str], bool] = field(default_factory=TTLCache)
    # tenant_id -> its authenticated rate limit ("10000/hour"), from its billing plan
    tiers: TTLCache[int, str] = field(default_factory=TTLCache)
    # ("user", user_id, tenant_id) or ("key", key_id) -> callbacks of open sockets
    watchers: dict[Hashable, set[Watcher]] = field(default_factory=dict)
    origin: str = field(default_factory=lambda: uuid.uuid4().hex)
    listener: asyncio.Task[None] | None = None


def authority_of(services: Services) -> Authority:
    """The app's authority state (`Services.authority`), made on first use."""
    if services.authority is None:
        services.authority = Authority()
    return services.authority


# Reading a standing -------------------------------------------------------------------


async def read_standing(user_id: int, tenant_id: int) -> Standing:
    """From the store (inside the caller's transaction, when there is one)."""
    row = (
        await Membership.filter(user_id=user_id, tenant_id=tenant_id, user__is_active=True)
        .only("id", "role")
        .first()
    )
    return GONE if row is None else Standing(row.id, Role(row.role))


def apply(principal: Principal, standing: Standing) -> Principal:
    """`principal` acting with `standing`: the current role, capped for a key; lapsed
    authority is UNAUTHENTICATED."""
    if standing.role is None:
        if principal.api_key_id is not None:
            raise Unauthenticated("This API key's creator no longer belongs to the organization.")
        raise Unauthenticated(
            "You no longer belong to this organization.", reason="MEMBERSHIP_ENDED"
        )
    if principal.api_key_id is not None:
        role = cap(principal.role, standing.role)
    else:
        if principal.membership_id is not None and principal.membership_id != (
            standing.membership_id
        ):
            raise Unauthenticated(
                "This token was issued for an earlier membership.", reason="MEMBERSHIP_ENDED"
            )
        role = standing.role
    return principal if role == principal.role else replace(principal, role=role)


async def current(services: Services, principal: Principal) -> Principal:
    """The principal with the authority it holds now (cached standing; see the module)."""
    if principal.user_id is None:
        raise Unauthenticated("This API key's creator no longer exists.")
    user_id, tenant_id = principal.user_id, principal.tenant_id

    async def load() -> Standing:
        return await read_standing(user_id, tenant_id)

    ttl = services.settings.authz_cache_seconds
    found = authority_of(services)
    standing = await read_through(found.standings, (user_id, tenant_id), ttl, load)
    fresh = apply(principal, standing or GONE)
    family = principal.session_family
    if principal.api_key_id is None and family is not None:

        async def live() -> bool:
            ended = RefreshToken.filter(user_id=user_id, family=family).exclude(revoked_at=None)
            return not await ended.exists()

        if not await read_through(found.sessions, (user_id, family), ttl, live):
            raise Unauthenticated("This session has ended.", reason="SESSION_ENDED")
    return fresh


async def rate_limit_of(services: Services, tenant_id: int) -> str:
    """The authenticated rate limit of `tenant_id`'s callers: its plan's requests per hour
    (`tenants.requests_per_hour`), else RATE_LIMIT_AUTHENTICATED. Cached like standings;
    a plan change reaches every process through `tier_changed`."""
    default = services.settings.rate_limit_authenticated

    async def load() -> str:
        row = await Tenant.filter(id=tenant_id).only("id", "requests_per_hour").first()
        hourly = None if row is None else row.requests_per_hour
        return default if hourly is None else f"{int(hourly)}/hour"

    ttl = services.settings.authz_cache_seconds
    return await read_through(authority_of(services).tiers, tenant_id, ttl, load) or default


async def tier_changed(tenant_id: int) -> None:
    """A tenant's rate limit changed (its plan): every process, this one included, reads
    it again (call after commit)."""
    try:
        await get_bus().publish(CHANNEL, {"tier": tenant_id})
    except Exception:
        log.error("rate tier change not published on the bus", exc_info=True)


async def recheck(services: Services, principal: Principal) -> Principal:
    """A long-lived principal (an open socket's) re-validated: token expiry, the key row
    (revoked? capped?) from the store, then the member's standing."""
    if principal.expires_at is not None and principal.expires_at <= time.time():
        raise Unauthenticated("Access token expired.", reason="TOKEN_EXPIRED")
    if principal.api_key_id is not None:
        key = (
            await ApiKey.filter(id=principal.api_key_id, revoked_at=None)
            .only("id", "role", "created_by_id")
            .first()
        )
        if key is None:
            raise Unauthenticated("Invalid API key.")
        principal = replace(principal, role=Role(key.role), user_id=key.created_by_id)
    return await current(services, principal)


async def confirm(ctx: Context, permission: str) -> Principal:
    """The caller's authority read from the store now, holding `permission`; stored in
    `ctx.principal` for the rest of the operation."""
    principal = ctx.require_principal()
    base = principal
    if principal.api_key_id is not None:
        key = await ApiKey.filter(
            id=principal.api_key_id, tenant_id=principal.tenant_id, revoked_at=None
        ).first()
        if key is None:
            raise Unauthenticated("Invalid API key.")
        base = replace(principal, role=Role(key.role), user_id=key.created_by_id)
    if base.user_id is None:
        raise Unauthenticated("This API key's creator no longer exists.")
    fresh = apply(base, await read_standing(base.user_id, base.tenant_id))
    ctx.principal = fresh
    if not allowed(fresh.role, permission):
        raise Forbidden()
    return fresh


# Changes ------------------------------------------------------------------------------


def _forget(services: Services, message: dict[str, Any]) -> None:
    """Drop what `message` makes stale in this process and wake the sockets concerned."""
    authority = authority_of(services)
    keys: list[Hashable] = []
    user, tenant, key = message.get("user"), message.get("tenant"), message.get("key")
    if isinstance(message.get("tier"), int):
        authority.tiers.forget(message["tier"])
    if isinstance(user, int):
        if isinstance(tenant, int):
            authority.standings.forget((user, tenant))
            authority.sessions.forget_where(lambda k: k[0] == user)
            keys.append(("user", user, tenant))
        else:  # every membership of the user (deactivation)
            authority.standings.forget_where(lambda k: k[0] == user)
            authority.sessions.forget_where(lambda k: k[0] == user)
            keys.extend(
                k for k in authority.watchers if isinstance(k, tuple) and k[:2] == ("user", user)
            )
        viewer_cache.forget_user(services, user)
        services.response_cache.forget_user(user)
    if isinstance(key, int):
        keys.append(("key", key))
    for watched in keys:
        for wake in list(authority.watchers.get(watched, ())):
            try:
                wake()
            except Exception:
                log.exception("a socket's authority watcher failed")


async def changed(
    services: Services,
    *,
    user_id: int | None = None,
    tenant_id: int | None = None,
    key_id: int | None = None,
) -> None:
    """Call after commit: a standing (user in tenant, or every tenant of the user when
    `tenant_id` is None) or an API key changed. Applies here at once, and in every other
    process through the bus."""
    message = {"user": user_id, "tenant": tenant_id, "key": key_id}
    _forget(services, message)
    try:
        await get_bus().publish(CHANNEL, {**message, "origin": authority_of(services).origin})
    except Exception:
        # The other processes still learn within AUTHZ_CACHE_SECONDS.
        log.error("authority change not published on the bus", exc_info=True)


async def listen(services: Services) -> None:
    """Follow other processes' changes (run for the app's life: `start_listening`)."""
    origin = authority_of(services).origin
    stream = get_bus().subscribe([CHANNEL])
    try:
        async for message in stream:
            if message.get("origin") != origin:
                _forget(services, message)
    finally:
        await stream.aclose()


def start_listening(services: Services) -> None:
    authority = authority_of(services)
    if authority.listener is None or authority.listener.done():
        authority.listener = asyncio.create_task(listen(services), name="authority-listener")


async def stop_listening(services: Services) -> None:
    authority = authority_of(services)
    task, authority.listener = authority.listener, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def watch(services: Services, keys: list[Hashable], wake: Watcher) -> Callable[[], None]:
    """Call `wake` when any of `keys` changes; returns the function that stops it."""
    watchers = authority_of(services).watchers
    for key in keys:
        watchers.setdefault(key, set()).add(wake)

    def stop() -> None:
        for key in keys:
            found = watchers.get(key)
            if found is not None:
                found.discard(wake)
                if not found:
                    del watchers[key]

    return stop


def watch_keys(principal: Principal) -> list[Hashable]:
    """What a principal's authority depends on: its member's standing, and its key."""
    keys: list[Hashable] = []
    if principal.user_id is not None:
        keys.append(("user", principal.user_id, principal.tenant_id))
    if principal.api_key_id is not None:
        keys.append(("key", principal.api_key_id))
    return keys
