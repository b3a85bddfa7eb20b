"""The private response cache behind `me`: hits skip execution but not the edge, local
writes show at once, entries never cross callers, only hinted error-free queries are
kept, and VIEWER_CACHE_SECONDS=0 (or RESPONSE_CACHE_ENTRIES=0) turns it off."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from graphql import parse

from gateway.app import create_app
from kit import metrics
from kit.response_cache import MAX_ENTRY_BYTES, CachedAnswer, ResponseCache
from models.members import Membership
from models.tenants import Tenant
from schema.build import build_schema
from schema.cache_control import policy_of
from tests.apikeys.test_apikeys import REVOKE, create_key
from tests.conftest import Store, error_codes, gql, make_settings, register
from tests.members.test_members import CHANGE_ROLE, REMOVE, join, member_id

ME = "{ me { role user { email name } organization { name } } }"
MEMBERSHIPS = "{ me { role memberships { role organization { name } } } }"
UPDATE = "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { name } }"
RENAME = "mutation($i: UpdateOrganizationInput!) { updateOrganization(input: $i) { name slug } }"


def cache(app: Any) -> ResponseCache:
    return app.state.services.response_cache


def client_of(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def app_with(store: Store, **overrides: Any) -> Any:
    settings = make_settings(database_url=store.url, **overrides)
    return create_app(settings, configure_logs=False)


def db_id(global_id: str) -> int:
    return int(base64.b64decode(global_id).decode().split(":")[1])


def hit_count(operation: str = "anonymous") -> float:
    value = metrics.REGISTRY.get_sample_value(
        "switchboard_graphql_response_cache_hits_total", {"operation": operation}
    )
    return value or 0.0


async def test_repeat_me_answers_from_the_cache(app, client, owner):
    first = await gql(client, MEMBERSHIPS, token=owner.token)
    assert first["data"]["me"]["memberships"][0]["role"] == "OWNER"
    assert cache(app).hits == 0 and len(cache(app)) == 1
    # Changed behind the gateway's back (no forget): memberships are read from the store
    # on every execution, so only a cached answer can still say OWNER.
    await Membership.filter(user_id=db_id(owner.user_id)).update(role="MANAGER")
    before = hit_count()
    again = await gql(client, MEMBERSHIPS, token=owner.token)
    assert again == first
    assert cache(app).hits == 1 and hit_count() == before + 1


async def test_a_hit_has_the_same_answer_and_headers(app, client, owner):
    auth = {"Authorization": f"Bearer {owner.token}"}
    for accept in ("application/json", "application/graphql-response+json"):
        headers = {**auth, "Accept": accept}
        cache(app).forget_all()
        miss = await client.post("/graphql", json={"query": ME}, headers=headers)
        hit = await client.post("/graphql", json={"query": ME}, headers=headers)
        assert hit.status_code == miss.status_code == 200
        assert hit.content == miss.content
        assert hit.headers["content-type"] == miss.headers["content-type"]
        assert hit.headers["x-request-id"] != miss.headers["x-request-id"]
        assert "x-ratelimit-remaining" in hit.headers
    assert cache(app).hits == 2


async def test_local_writes_show_at_once(app, client, owner):
    assert (await gql(client, ME, token=owner.token))["data"]["me"]["user"]["name"] == "Owner"
    await gql(client, UPDATE, {"i": {"name": "Renamed"}}, token=owner.token)
    assert (await gql(client, ME, token=owner.token))["data"]["me"]["user"]["name"] == "Renamed"

    # A member signed in to the organization sees its new name at once too (it shows in
    # their `memberships`), while READ_ONLY cannot rename it.
    member, _ = await join(client, owner, "READ_ONLY")
    assert (await gql(client, MEMBERSHIPS, token=member.token))["data"]["me"]["memberships"][0][
        "organization"
    ]["name"] == "Acme"
    denied = await gql(client, RENAME, {"i": {"name": "Nope"}}, token=member.token)
    assert error_codes(denied) == ["FORBIDDEN"]
    renamed = await gql(client, RENAME, {"i": {"name": "  Acme Renamed "}}, token=owner.token)
    assert renamed["data"]["updateOrganization"]["name"] == "Acme Renamed"
    me = (await gql(client, ME, token=owner.token))["data"]["me"]
    assert me["organization"]["name"] == "Acme Renamed"
    theirs = (await gql(client, MEMBERSHIPS, token=member.token))["data"]["me"]["memberships"]
    assert theirs[0]["organization"]["name"] == "Acme Renamed"
    empty = await gql(client, RENAME, {"i": {"name": "   "}}, token=owner.token)
    assert error_codes(empty) == ["BAD_USER_INPUT"]
    assert empty["errors"][0]["extensions"]["details"] == {"name": "must not be empty"}
    assert (await Tenant.get(id=db_id(owner.org_id))).name == "Acme Renamed"


async def test_role_change_and_removal_show_at_once(app, client, owner):
    member, _ = await join(client, owner, "SUPPORT")
    seen = await gql(client, MEMBERSHIPS, token=member.token)
    assert [m["role"] for m in seen["data"]["me"]["memberships"]] == ["SUPPORT"]
    assert (await gql(client, MEMBERSHIPS, token=member.token)) == seen  # cached now

    mid = await member_id(client, owner, member.email)
    await gql(client, CHANGE_ROLE, {"i": {"memberId": mid, "role": "READ_ONLY"}}, token=owner.token)
    changed = (await gql(client, MEMBERSHIPS, token=member.token))["data"]["me"]
    assert changed["role"] == "READ_ONLY"  # the current role, whatever the token says
    assert [m["role"] for m in changed["memberships"]] == ["READ_ONLY"]

    await gql(client, REMOVE, {"i": {"memberId": mid}}, token=owner.token)
    removed = await gql(client, MEMBERSHIPS, token=member.token)
    assert error_codes(removed) == ["UNAUTHENTICATED"]  # not a cached answer


async def test_logout_drops_the_callers_entries(app, client, owner):
    await gql(client, ME, token=owner.token)
    assert len(cache(app)) == 1
    body = await gql(client, "mutation { logout { ok } }", token=owner.token)
    assert body["data"]["logout"]["ok"] is True
    assert len(cache(app)) == 0


async def test_callers_never_share_entries(app, client):
    a = await register(client, org="Alpha")
    b = await register(client, org="Beta")
    for _ in range(2):
        me_a = (await gql(client, ME, token=a.token))["data"]["me"]
        me_b = (await gql(client, ME, token=b.token))["data"]["me"]
        assert me_a["user"]["email"] == a.email and me_a["organization"]["name"] == "Alpha"
        assert me_b["user"]["email"] == b.email and me_b["organization"]["name"] == "Beta"
    # The same user through an API key (another principal, another role) has its own entry.
    key = await create_key(client, a.token, role="READ_ONLY")
    by_key = (await gql(client, ME, token=key["secret"]))["data"]["me"]
    assert by_key["role"] == "READ_ONLY"
    assert len(cache(app)) == 3 and cache(app).hits == 2


async def test_an_unhinted_field_is_never_cached(app, client, owner):
    query = "{ me { role } members(first: 1) { totalCount } }"
    for _ in range(2):
        body = await gql(client, query, token=owner.token)
        assert "errors" not in body, body
    assert len(cache(app)) == 0 and cache(app).hits == 0


async def test_mutations_errors_and_anonymous_calls_are_never_stored(app, client, owner):
    for _ in range(2):
        await gql(client, UPDATE, {"i": {"name": "Same"}}, token=owner.token)
        bad = await gql(client, "{ me { role nope } }", token=owner.token)
        assert error_codes(bad) == ["GRAPHQL_VALIDATION_FAILED"]
        missing_var = await gql(client, "query($x: Int!) { me { role } }", token=owner.token)
        assert missing_var.get("errors")
        anonymous = await gql(client, ME)
        assert error_codes(anonymous) == ["UNAUTHENTICATED"]
    assert len(cache(app)) == 0 and cache(app).hits == 0


async def test_a_batch_body_is_never_looked_up_or_stored(app, client, owner):
    auth = {"Authorization": f"Bearer {owner.token}"}
    for _ in range(2):
        response = await client.post("/graphql", json=[{"query": ME}], headers=auth)
        assert response.status_code == 400  # batching is off
    assert len(cache(app)) == 0 and cache(app).hits == 0


async def test_a_revoked_api_key_is_refused_with_a_warm_entry(app, client, owner):
    key = await create_key(client, owner.token, role="SUPPORT")
    for _ in range(2):
        assert (await gql(client, ME, token=key["secret"]))["data"]["me"]["role"] == "SUPPORT"
    assert cache(app).hits == 1
    await gql(client, REVOKE, {"i": {"id": key["apiKey"]["id"]}}, token=owner.token)
    refused = await gql(client, ME, token=key["secret"])
    assert error_codes(refused) == ["UNAUTHENTICATED"] and refused["_status"] == 401


async def test_hits_count_against_the_rate_limit(store):
    app = app_with(store, rate_limit_authenticated="3/hour")
    async with client_of(app) as client:
        acct = await register(client)
        statuses = [(await gql(client, ME, token=acct.token))["_status"] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert cache(app).hits == 2


async def test_off_with_zero_seconds_or_zero_entries(store):
    for overrides in ({"viewer_cache_seconds": 0}, {"response_cache_entries": 0}):
        app = app_with(store, **overrides)
        async with client_of(app) as client:
            acct = await register(client)
            first = await gql(client, MEMBERSHIPS, token=acct.token)
            assert first["data"]["me"]["memberships"][0]["role"] == "OWNER"
            await Membership.filter(user_id=db_id(acct.user_id)).update(role="MANAGER")
            again = await gql(client, MEMBERSHIPS, token=acct.token)
            assert again["data"]["me"]["memberships"][0]["role"] == "MANAGER"
            assert cache(app).hits == 0 and len(cache(app)) == 0


async def test_an_entry_ends_with_the_cached_profiles_it_was_built_from(store):
    """So another process's write shows within VIEWER_CACHE_SECONDS, not two of them."""
    app = app_with(store, viewer_cache_seconds=60)
    async with client_of(app) as client:
        acct = await register(client)
        await gql(client, ME, token=acct.token)
        [answer] = list(cache(app)._entries.values())
        profiles = app.state.services.viewer_cache
        assert answer.expires_at <= profiles.users.expires_at(db_id(acct.user_id))
        assert answer.expires_at <= profiles.tenants.expires_at(db_id(acct.org_id))


def answer(user_id: int, size: int = 10, body: bytes = b"x") -> CachedAnswer:
    return CachedAnswer(body, 10.0, user_id, None, size)


def test_entries_expire_evict_and_skip_stores_older_than_a_forget():
    responses = ResponseCache(max_entries=2)
    for n in range(3):
        assert responses.put(n, answer(n), responses.generation)
    assert len(responses) == 2 and responses.get(0, 0.0) is None  # the oldest went
    assert responses.get(2, 9.9) is not None and responses.get(2, 10.0) is None  # expired
    generation = responses.generation
    responses.forget_user(1)
    assert responses.get(1, 0.0) is None and len(responses) == 0 and responses.bytes == 0
    assert not responses.put(5, answer(5), generation)


def test_memory_is_bounded_in_bytes_too():
    responses = ResponseCache(max_entries=100, max_bytes=1000)
    for n in range(10):
        assert responses.put(n, answer(n, size=300), responses.generation)
    assert len(responses) == 3 and responses.bytes == 900
    assert [n for n in range(10) if responses.get(n, 0.0)] == [7, 8, 9]
    responses.put(9, answer(9, size=100), responses.generation)  # replaced, not added
    assert responses.bytes == 700
    assert not responses.put(11, answer(11, size=MAX_ENTRY_BYTES + 1), responses.generation)
    responses.forget_all()
    assert len(responses) == 0 and responses.bytes == 0


async def test_a_padded_body_is_not_kept(app, client, owner):
    padding = {"pad": "x" * MAX_ENTRY_BYTES}
    for _ in range(2):
        body = await gql(client, ME, padding, token=owner.token)
        assert "errors" not in body, body
    assert len(cache(app)) == 0 and cache(app).hits == 0


def test_policy_from_hints_and_selection():
    schema = build_schema(make_settings())._schema

    def policy(query: str, name: str | None = None) -> float | None:
        return policy_of(schema, parse(query), name)

    assert policy("{ me { role __typename } }") == 60
    assert policy("{ __typename me { role } }") == 60
    assert policy("query Q { me { ...V } } fragment V on Viewer { user { email } }") == 60
    assert policy("{ me { ... on Viewer { memberships { organization { name } } } } }") == 60
    assert policy("{ me { role } members(first: 1) { totalCount } }") is None  # unhinted root
    assert policy("{ me { ...V } } fragment V on Viewer { role } fragment W on Query { x }") == 60
    assert policy("{ __schema { queryType { name } } }") is None  # introspection
    assert policy("mutation { logout { ok } }") is None
    assert policy("query A { me { role } } query B { members { totalCount } }", "A") == 60
    assert policy("query A { me { role } } query B { members { totalCount } }", "B") is None
    assert policy("query A { me { role } } query B { me { role } }") is None  # which one?
    assert policy("{ me { ...Missing } }") is None
