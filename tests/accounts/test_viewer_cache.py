"""The viewer cache behind `me { user organization }`: writes through this process show
at once, other processes' writes within VIEWER_CACHE_SECONDS, and 0 turns it off."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.app import create_app
from kit.ttl_cache import TTLCache, read_through
from models.tenants import Tenant
from tests.conftest import Store, gql, make_settings, register

ME = "{ me { role user { name email emailVerified } organization { name slug } } }"
UPDATE = "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { name } }"


def client_of(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def app_with(store: Store, seconds: float) -> Any:
    settings = make_settings(database_url=store.url, viewer_cache_seconds=seconds)
    return create_app(settings, configure_logs=False)


async def test_own_profile_change_shows_at_once(client, owner):
    first = await gql(client, ME, token=owner.token)
    assert first["data"]["me"]["user"]["name"] == "Owner"
    changed = await gql(client, UPDATE, {"i": {"name": "Renamed"}}, token=owner.token)
    assert changed["data"]["updateProfile"]["name"] == "Renamed"
    again = await gql(client, ME, token=owner.token)
    assert again["data"]["me"]["user"]["name"] == "Renamed"
    assert again["data"]["me"]["role"] == "OWNER"


async def test_other_process_change_bounded_by_the_setting(store):
    """Two gateway apps on one store stand for two processes: with the cache on, the
    first keeps answering its copy (within the TTL, 60 s here); with 0 it reads through."""
    cached, other, uncached = app_with(store, 60), app_with(store, 60), app_with(store, 0)
    async with client_of(cached) as a, client_of(other) as b, client_of(uncached) as c:
        acct = await register(a, org="Initech")
        assert (await gql(a, ME, token=acct.token))["data"]["me"]["user"]["name"] == "Owner"
        assert (await gql(c, ME, token=acct.token))["data"]["me"]["user"]["name"] == "Owner"
        await gql(b, UPDATE, {"i": {"name": "Elsewhere"}}, token=acct.token)
        org = await gql(c, ME, token=acct.token)
        await Tenant.filter(slug=org["data"]["me"]["organization"]["slug"]).update(
            name="Intertrode"
        )

        stale = (await gql(a, ME, token=acct.token))["data"]["me"]
        fresh = (await gql(c, ME, token=acct.token))["data"]["me"]
        assert stale["user"]["name"] == "Owner" and stale["organization"]["name"] == "Initech"
        assert fresh["user"]["name"] == "Elsewhere"
        assert fresh["organization"]["name"] == "Intertrode"
        # The process that made the change answers it at once.
        assert (await gql(b, ME, token=acct.token))["data"]["me"]["user"]["name"] == "Elsewhere"


async def test_a_read_older_than_a_forget_is_not_stored():
    cache: TTLCache[int, str] = TTLCache()

    async def slow_load() -> str:
        cache.forget(1)  # a write lands while the old row is being read
        return "old"

    assert await read_through(cache, 1, 5, slow_load) == "old"
    assert cache.get(1, 0) is None

    async def load() -> str:
        return "new"

    assert await read_through(cache, 1, 5, load) == "new"
    assert len(cache) == 1

    async def missing() -> None:
        return None

    assert await read_through(cache, 2, 5, missing) is None
    assert len(cache) == 1  # misses are not stored
