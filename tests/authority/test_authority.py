"""Authority is current, not just signed (resolvers/authority.py, kit/roles.py).

Removal, demotion and deactivation bite on the next request of every token and key of the
member, in this process and (through the event bus) in others; what grants or changes
authority reads the caller's membership from the store; an API key never holds more than
its creator; who manages whom follows the product's role table (MANAGES), pair by pair.
"""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest

from kit.bus import RedisBus
from kit.roles import Role
from kit.security import Principal, hash_password, issue_access_token
from models.accounts import User
from models.members import Membership
from resolvers import accounts, authority, events
from resolvers.context import Context
from tests.apikeys.test_apikeys import CREATE, LIST, create_key
from tests.conftest import Account, error_codes, eventually, gql, make_settings, register
from tests.factories import app_with
from tests.members.test_members import CHANGE_ROLE, INVITE, REMOVE, join, member_id, new_email

CONTACTS = "{ contacts(first: 5) { totalCount } }"
CREATE_CONTACT = """mutation($i: CreateContactInput!) {
  createContact(input: $i) { contact { id } } }"""
ME = "{ me { role isApiKey organization { id } memberships { organization { id } } } }"


def db_id(global_id: str) -> int:
    return int(base64.b64decode(global_id).decode().split(":", 1)[1])


async def test_removed_manager_old_token_can_do_nothing(client, owner):
    manager, _ = await join(client, owner, "MANAGER")
    assert "errors" not in await gql(client, CONTACTS, token=manager.token)
    mid = await member_id(client, owner, manager.email)
    removed = await gql(client, REMOVE, {"i": {"memberId": mid}}, token=owner.token)
    assert "errors" not in removed, removed
    attempts = [
        (CONTACTS, {}),
        (CREATE_CONTACT, {"i": {"name": "Mallory's friend"}}),
        (CREATE, {"i": {"name": "backdoor", "role": "SUPPORT"}}),
        (INVITE, {"i": {"email": new_email(), "role": "SUPPORT"}}),
    ]
    for query, variables in attempts:
        body = await gql(client, query, variables, token=manager.token)
        assert error_codes(body) == ["UNAUTHENTICATED"], (query, body)


async def test_demoted_owner_cannot_promote_back_or_remove_the_other_owner(client, owner):
    second, _ = await join(client, owner, "OWNER")
    second_mid = await member_id(client, owner, second.email)
    owner_mid = await member_id(client, owner, owner.email)
    demoted = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": second_mid, "role": "READ_ONLY"}}, owner.token
    )
    assert "errors" not in demoted, demoted
    me = await gql(client, ME, token=second.token)
    assert me["data"]["me"]["role"] == "READ_ONLY"  # the token still says OWNER
    back = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": second_mid, "role": "OWNER"}}, second.token
    )
    assert error_codes(back) == ["FORBIDDEN"]
    coup = await gql(client, REMOVE, {"i": {"memberId": owner_mid}}, token=second.token)
    assert error_codes(coup) == ["FORBIDDEN"]
    key = await gql(client, CREATE, {"i": {"name": "k", "role": "OWNER"}}, token=second.token)
    assert error_codes(key) == ["FORBIDDEN"]


async def test_re_invited_member_old_token_stays_dead(client, owner):
    member, _ = await join(client, owner, "SUPPORT")
    mid = await member_id(client, owner, member.email)
    await gql(client, REMOVE, {"i": {"memberId": mid}}, token=owner.token)
    old_token = member.token
    again, _ = await join_as(client, owner, member.email, "MANAGER")
    assert error_codes(await gql(client, ME, token=old_token)) == ["UNAUTHENTICATED"]
    assert (await gql(client, ME, token=again))["data"]["me"]["role"] == "MANAGER"


async def join_as(client, owner: Account, email: str, role: str) -> tuple[str, dict]:
    from tests.conftest import STRONG_PASSWORD
    from tests.members.test_members import ACCEPT, invite, last_token

    await invite(client, owner, email, role)
    body = await gql(
        client, ACCEPT, {"i": {"token": await last_token(email), "password": STRONG_PASSWORD}}
    )
    assert "errors" not in body, body
    return body["data"]["acceptInvitation"]["accessToken"], body


async def test_deactivated_user_tokens_and_keys_stop(app, client, owner):
    manager, _ = await join(client, owner, "MANAGER")
    key = (await create_key(client, manager.token, "SUPPORT"))["secret"]
    assert "errors" not in await gql(client, ME, token=key)
    ctx = Context(services=app.state.services, request_id="test")
    assert await accounts.deactivate_user(ctx, db_id(manager.user_id))
    for token in (manager.token, key):
        assert error_codes(await gql(client, ME, token=token)) == ["UNAUTHENTICATED"]
    body = await gql(client, CREATE, {"i": {"name": "x", "role": "SUPPORT"}}, token=manager.token)
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_authority_mutations_read_the_store_not_the_cache(store):
    """A demotion written behind the cache's back (no bus message): requests may act with
    the cached role for AUTHZ_CACHE_SECONDS, but granting authority reads the store."""
    import httpx

    app = app_with(make_settings(database_url=store.url, authz_cache_seconds=300))
    transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        owner = await register(client)
        manager, _ = await join(client, owner, "MANAGER")
        assert (await gql(client, ME, token=manager.token))["data"]["me"]["role"] == "MANAGER"
        await Membership.filter(user_id=db_id(manager.user_id)).update(role="READ_ONLY")
        # Cached standing: reads still go through with the old role...
        assert (await gql(client, ME, token=manager.token))["data"]["me"]["role"] == "MANAGER"
        # ...but nothing that grants authority does.
        for query, variables in [
            (CREATE, {"i": {"name": "k", "role": "SUPPORT"}}),
            (INVITE, {"i": {"email": new_email(), "role": "SUPPORT"}}),
        ]:
            body = await gql(client, query, variables, token=manager.token)
            assert error_codes(body) == ["FORBIDDEN"], body


# API keys and their creators -------------------------------------------------------------


async def test_demotion_caps_keys_and_removal_revokes_them(client, owner):
    manager, _ = await join(client, owner, "MANAGER")
    manager_key = await create_key(client, manager.token, "MANAGER")
    read_key = await create_key(client, manager.token, "READ_ONLY")
    mid = await member_id(client, owner, manager.email)
    demoted = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": mid, "role": "SUPPORT"}}, token=owner.token
    )
    assert "errors" not in demoted, demoted
    me = await gql(client, ME, token=manager_key["secret"])
    assert me["data"]["me"]["role"] == "SUPPORT"
    listed = await gql(client, LIST, token=owner.token)
    roles = {e["node"]["id"]: e["node"]["role"] for e in listed["data"]["apiKeys"]["edges"]}
    assert roles[manager_key["apiKey"]["id"]] == "SUPPORT"
    assert roles[read_key["apiKey"]["id"]] == "READ_ONLY"
    await gql(client, REMOVE, {"i": {"memberId": mid}}, token=owner.token)
    for key in (manager_key, read_key):
        assert error_codes(await gql(client, ME, token=key["secret"])) == ["UNAUTHENTICATED"]
    listed = await gql(client, LIST, {"rev": True}, token=owner.token)
    assert all(e["node"]["revokedAt"] for e in listed["data"]["apiKeys"]["edges"])


async def test_a_key_never_outranks_its_creator_even_behind_the_store(app, client, owner):
    """Demotion written straight to the store (no cap on the key rows): the key still acts
    with at most its creator's current role."""
    manager, _ = await join(client, owner, "MANAGER")
    key = (await create_key(client, manager.token, "MANAGER"))["secret"]
    await Membership.filter(user_id=db_id(manager.user_id)).update(role="ACCOUNTING")
    # AUTHZ cache: a fresh standing is read after the change is announced.
    await authority.changed(app.state.services, user_id=db_id(manager.user_id))
    me = await gql(client, ME, token=key)
    # MANAGER ∩ ACCOUNTING holds only what READ_ONLY holds (ACCOUNTING reads AI usage,
    # which a MANAGER cannot; MANAGER writes CRM, which ACCOUNTING cannot).
    assert me["data"]["me"]["role"] == "READ_ONLY"


async def test_key_roles_stay_within_the_creator(client, owner):
    manager, _ = await join(client, owner, "MANAGER")
    # ACCOUNTING ranks below MANAGER but reads AI usage, which a MANAGER cannot.
    body = await gql(client, CREATE, {"i": {"name": "k", "role": "ACCOUNTING"}}, manager.token)
    assert error_codes(body) == ["FORBIDDEN"]
    for role in ("MANAGER", "SUPPORT", "READ_ONLY"):
        await create_key(client, manager.token, role)
    owner_key = await gql(client, CREATE, {"i": {"name": "k", "role": "OWNER"}}, manager.token)
    assert error_codes(owner_key) == ["FORBIDDEN"]


async def test_read_only_key_sees_only_its_own_organization(client, owner):
    other = await register(client, org="Elsewhere")
    # The owner also belongs to a second organization.
    await join_as(client, other, owner.email, "SUPPORT")
    key = (await create_key(client, owner.token, "READ_ONLY"))["secret"]
    me = (await gql(client, ME, token=key))["data"]["me"]
    assert [m["organization"]["id"] for m in me["memberships"]] == [owner.org_id]
    mine = (await gql(client, ME, token=owner.token))["data"]["me"]
    assert len(mine["memberships"]) == 2  # the user still sees both


# Other processes learn through the bus -------------------------------------------------


@pytest.mark.parametrize("bus_kind", ["memory", "redis"])
async def test_other_process_drops_its_cached_standing_at_once(store, bus_kind, redis_url):
    """Two gateway apps (processes) with a long AUTHZ cache: a removal through one is
    refused by the other on its next request, learned from the bus, not the TTL."""
    import httpx

    installed = None
    if bus_kind == "redis":
        installed = RedisBus(redis_url, prefix=f"test-{uuid.uuid4().hex[:6]}")
        events.install_bus(installed)
    settings = make_settings(database_url=store.url, authz_cache_seconds=300)
    a, b = app_with(settings), app_with(settings)
    for app in (a, b):
        authority.start_listening(app.state.services)
    try:
        ta = httpx.ASGITransport(app=a, client=("10.0.0.1", 1))
        tb = httpx.ASGITransport(app=b, client=("10.0.0.2", 1))
        async with (
            httpx.AsyncClient(transport=ta, base_url="http://a") as ca,
            httpx.AsyncClient(transport=tb, base_url="http://b") as cb,
        ):
            owner = await register(ca)
            member, _ = await join(ca, owner, "MANAGER")
            assert (await gql(cb, ME, token=member.token))["data"]["me"]["role"] == "MANAGER"
            mid = await member_id(ca, owner, member.email)
            await gql(ca, CHANGE_ROLE, {"i": {"memberId": mid, "role": "SUPPORT"}}, owner.token)

            async def demoted() -> bool:
                body = await gql(cb, ME, token=member.token)
                return bool(body["data"]["me"]["role"] == "SUPPORT")

            await eventually(demoted, "process B sees the demotion")
            await gql(ca, REMOVE, {"i": {"memberId": mid}}, token=owner.token)

            async def refused() -> bool:
                return error_codes(await gql(cb, ME, token=member.token)) == ["UNAUTHENTICATED"]

            await eventually(refused, "process B refuses the removed member")
    finally:
        for app in (a, b):
            await authority.stop_listening(app.state.services)
        if installed is not None:
            events.install_bus(None)
            await installed.close()


# Who manages whom: every pair ------------------------------------------------------------

ROLES = [r.value for r in Role]
# The product's role table, written out here rather than read from kit/roles.py.
EXPECTED_MANAGES = {
    "OWNER": set(ROLES),
    "MANAGER": {"SUPPORT", "ACCOUNTING", "READ_ONLY"},
    "SUPPORT": set(),
    "ACCOUNTING": set(),
    "READ_ONLY": set(),
}


async def _member(tenant_id: int, role: str) -> Membership:
    user = await User.create(email=new_email("pair"), password_hash=hash_password("x" * 12))
    return await Membership.create(user_id=user.id, tenant_id=tenant_id, role=role)


def _gid(kind: str, row_id: int) -> str:
    return base64.b64encode(f"{kind}:{row_id}".encode()).decode()


@pytest.mark.parametrize("actor", ROLES)
async def test_who_manages_whom_every_pair(app, client, owner, actor):
    tenant_id = db_id(owner.org_id)
    me = await _member(tenant_id, actor)
    token, _ = issue_access_token(
        app.state.services.settings,
        Principal(me.user_id, tenant_id, Role(actor), membership_id=me.id),
    )
    allowed = EXPECTED_MANAGES[actor]
    for role in ROLES:
        body = await gql(client, INVITE, {"i": {"email": new_email(), "role": role}}, token)
        assert error_codes(body) == ([] if role in allowed else ["FORBIDDEN"]), ("invite", role)
    for role in ROLES:
        target = await _member(tenant_id, role)
        body = await gql(client, REMOVE, {"i": {"memberId": _gid("Member", target.id)}}, token)
        assert error_codes(body) == ([] if role in allowed else ["FORBIDDEN"]), ("remove", role)
    for old in ROLES:
        for new in ROLES:
            if old == new:
                continue
            target = await _member(tenant_id, old)
            body = await gql(
                client,
                CHANGE_ROLE,
                {"i": {"memberId": _gid("Member", target.id), "role": new}},
                token,
            )
            ok = old in allowed and new in allowed
            assert error_codes(body) == ([] if ok else ["FORBIDDEN"]), ("change", old, new)
            if ok:
                assert body["data"]["changeMemberRole"]["member"]["role"] == new


# Concurrent refreshes with one token: both lose -----------------------------------------

REFRESH = """mutation($i: RefreshTokenInput!) {
  refreshToken(input: $i) { accessToken refreshToken } }"""


async def test_concurrent_refreshes_with_one_token_end_the_whole_session(client):
    """Truly concurrent: whichever wins, no token of the session works afterwards."""
    account = await register(client)
    token = account.refresh
    for _ in range(8):
        first, second = await asyncio.gather(
            gql(client, REFRESH, {"i": {"refreshToken": token}}),
            gql(client, REFRESH, {"i": {"refreshToken": token}}),
        )
        outcomes = [first, second]
        assert any(error_codes(r) == ["UNAUTHENTICATED"] for r in outcomes), outcomes
        for body in outcomes:
            if "errors" in body:
                continue
            pair = body["data"]["refreshToken"]
            again = await gql(client, REFRESH, {"i": {"refreshToken": pair["refreshToken"]}})
            assert error_codes(again) == ["UNAUTHENTICATED"]
            me = await gql(client, "{ me { role } }", token=pair["accessToken"])
            assert error_codes(me) == ["UNAUTHENTICATED"], me
        assert error_codes(await gql(client, "{ me { role } }", token=account.token)) == [
            "UNAUTHENTICATED"
        ]
        # A fresh session for the next round.
        login = await gql(
            client,
            """mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }""",
            {"i": {"email": account.email, "password": account.password}},
        )
        account.token = login["data"]["login"]["accessToken"]
        token = account.refresh = login["data"]["login"]["refreshToken"]
