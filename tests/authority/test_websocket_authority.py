"""Open sockets keep up with the caller's authority (gateway/http/websocket.py).

Every operation on a socket re-checks the principal and counts against the HTTP budget;
a removal, demotion, key revocation or token expiry ends running subscriptions by
closing the socket (4401: no longer authenticated; 4403: role lowered).
"""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from models.apikeys import ApiKey
from tests.apikeys.test_apikeys import REVOKE, create_key
from tests.conftest import error_codes, gql, register, running_server
from tests.factories import app_with
from tests.members.test_members import CHANGE_ROLE, REMOVE, join, member_id
from tests.transport.test_websocket import HEARTBEAT, open_session, receive, subscribe

CREATE_CONTACT = """mutation($i: CreateContactInput!) {
  createContact(input: $i) { contact { id } } }"""


async def _streaming(url: str, token: str):  # type: ignore[no-untyped-def]
    ws = await open_session(url, {"Authorization": f"Bearer {token}"})
    assert (await receive(ws))["type"] == "connection_ack"
    await subscribe(ws, "beat", HEARTBEAT, {"s": 1})
    assert (await receive(ws))["type"] == "next"
    return ws


async def _closed_with(ws, code: int) -> str:  # type: ignore[no-untyped-def]
    """Drain until the server closes; the close code must be `code`."""
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(100):
            await receive(ws)
    assert closed.value.rcvd is not None, closed.value
    assert closed.value.rcvd.code == code, closed.value.rcvd
    return closed.value.rcvd.reason


async def test_revoked_key_socket_is_closed_4401(live_server, client, owner):
    key = await create_key(client, owner.token, "SUPPORT")
    ws = await _streaming(live_server, key["secret"])
    try:
        revoked = await gql(client, REVOKE, {"i": {"id": key["apiKey"]["id"]}}, token=owner.token)
        assert "errors" not in revoked, revoked
        await _closed_with(ws, 4401)
    finally:
        await ws.close()


async def test_removed_member_socket_is_closed_4401(live_server, client, owner):
    member, _ = await join(client, owner, "MANAGER")
    ws = await _streaming(live_server, member.token)
    try:
        mid = await member_id(client, owner, member.email)
        assert "errors" not in await gql(client, REMOVE, {"i": {"memberId": mid}}, owner.token)
        await _closed_with(ws, 4401)
    finally:
        await ws.close()


async def test_demoted_member_socket_is_closed_4403(live_server, client, owner):
    member, _ = await join(client, owner, "MANAGER")
    ws = await _streaming(live_server, member.token)
    try:
        mid = await member_id(client, owner, member.email)
        change = {"i": {"memberId": mid, "role": "SUPPORT"}}
        body = await gql(client, CHANGE_ROLE, change, owner.token)
        assert "errors" not in body, body
        reason = await _closed_with(ws, 4403)
        assert "SUPPORT" in reason
    finally:
        await ws.close()


async def test_each_operation_rechecks_the_key(live_server, client, owner):
    """Revoked behind the gateway's back (no change event): the next operation on the
    open socket is refused all the same, and nothing is created."""
    key = await create_key(client, owner.token, "SUPPORT")
    ws = await open_session(live_server, {"Authorization": f"Bearer {key['secret']}"})
    try:
        assert (await receive(ws))["type"] == "connection_ack"
        await ApiKey.filter(prefix=key["apiKey"]["prefix"]).update(revoked_at=time_now())
        await subscribe(ws, "c", CREATE_CONTACT, {"i": {"name": "Sneaky"}})
        await _closed_with(ws, 4401)
    finally:
        await ws.close()
    listing = await gql(client, "{ contacts(first: 5) { totalCount } }", token=owner.token)
    assert listing["data"]["contacts"]["totalCount"] == 0


def time_now():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.now(dt.UTC)


async def test_expiring_token_closes_the_socket_4401(live_server, client, owner, settings):
    claims = jwt.decode(owner.token, options={"verify_signature": False})
    claims.update(exp=int(time.time()) + 2, jti=uuid.uuid4().hex)
    kid, secret = settings.signing_keys[0]
    short = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
    ws = await _streaming(live_server, short)
    try:
        reason = await _closed_with(ws, 4401)
        assert "expired" in reason
    finally:
        await ws.close()


async def test_socket_operations_count_against_the_http_budget(settings):
    app = app_with(settings, rate_limit_authenticated="5/minute")
    async with running_server(app) as url:
        import httpx

        async with httpx.AsyncClient(base_url=url) as client:
            owner = await register(client)
            ws = await open_session(url, {"Authorization": f"Bearer {owner.token}"})
            try:
                assert (await receive(ws))["type"] == "connection_ack"
                outcomes = []
                for n in range(8):
                    await subscribe(ws, f"m{n}", CREATE_CONTACT, {"i": {"name": f"C{n}"}})
                    first = await receive(ws)
                    if first["type"] == "next":
                        assert "errors" not in first["payload"], first
                        assert (await receive(ws))["type"] == "complete"
                        outcomes.append("ok")
                    else:
                        assert first["type"] == "error", first
                        [error] = first["payload"]
                        assert error["extensions"]["code"] == "RATE_LIMITED"
                        assert error["extensions"]["retryAfter"] >= 1
                        outcomes.append("limited")
                assert outcomes == ["ok"] * 5 + ["limited"] * 3, outcomes
            finally:
                await ws.close()
            # The same budget: HTTP is refused too now.
            body = await gql(client, "{ me { role } }", token=owner.token)
            assert error_codes(body) == ["RATE_LIMITED"]
            assert json.dumps(body)  # a coded answer, not a crash
