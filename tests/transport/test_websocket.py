"""graphql-transport-ws over a real uvicorn server: authentication from
`connection_init`, coded errors, origin checks, and the heartbeat subscription."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import running_server
from tests.factories import app_with

PROTOCOL = "graphql-transport-ws"
HEARTBEAT = "subscription($s: Int!) { heartbeat(intervalSeconds: $s) { sequence serverTime } }"


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/graphql"


async def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def open_session(url: str, payload: dict | None, **kwargs: Any) -> ClientConnection:
    ws = await connect(ws_url(url), subprotocols=[PROTOCOL], **kwargs)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    return ws


async def subscribe(ws: ClientConnection, op_id: str, query: str, variables: dict) -> None:
    await ws.send(
        json.dumps(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
    )


@pytest.mark.parametrize("style", ["authorization", "token"])
async def test_valid_token_is_acked_and_heartbeat_streams(live_server, owner, style):
    payload = (
        {"Authorization": f"Bearer {owner.token}"}
        if style == "authorization"
        else {"token": owner.token}
    )
    ws = await open_session(live_server, payload)
    try:
        assert await receive(ws) == {"type": "connection_ack"}
        await subscribe(ws, "1", HEARTBEAT, {"s": 1})
        beats = [await receive(ws), await receive(ws)]
        for expected, message in enumerate(beats, start=1):
            assert message["type"] == "next" and message["id"] == "1"
            beat = message["payload"]["data"]["heartbeat"]
            assert beat["sequence"] == expected
            sent = dt.datetime.fromisoformat(beat["serverTime"])
            assert abs((dt.datetime.now(dt.UTC) - sent).total_seconds()) < 30
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
        await ws.send(json.dumps({"type": "ping"}))
        # After `complete` no more beats: the next message is the pong.
        assert await receive(ws) == {"type": "pong"}
    finally:
        await ws.close()


async def test_api_key_over_websocket(live_server, client, owner):
    from tests.conftest import gql

    created = await gql(
        client,
        "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }",
        {"i": {"name": "ws", "role": "READ_ONLY"}},
        token=owner.token,
    )
    secret = created["data"]["createApiKey"]["secret"]
    ws = await open_session(live_server, {"Authorization": f"Bearer {secret}"})
    try:
        assert (await receive(ws))["type"] == "connection_ack"
        await subscribe(ws, "k", "{ me { isApiKey role } }", {})
        message = await receive(ws)
        assert message["payload"]["data"]["me"] == {"isApiKey": True, "role": "READ_ONLY"}
        assert (await receive(ws)) == {"id": "k", "type": "complete"}
    finally:
        await ws.close()


@pytest.mark.parametrize(
    "payload",
    [
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"token": "sbk_" + "x" * 40},
        {"accessToken": "eyJhbGciOiJub25lIn0.e30."},
    ],
)
async def test_invalid_token_is_rejected_4403(live_server, payload):
    ws = await open_session(live_server, payload)
    with pytest.raises(ConnectionClosed) as closed:
        await receive(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_no_token_gets_coded_unauthenticated(live_server):
    ws = await open_session(live_server, None)
    try:
        assert (await receive(ws))["type"] == "connection_ack"
        await subscribe(ws, "a", HEARTBEAT, {"s": 1})
        message = await receive(ws)
        assert message["id"] == "a"
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        [error] = errors
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert error["extensions"]["requestId"]
        # Public fields still work on the same socket.
        await subscribe(ws, "b", "{ serverInfo { environment } }", {})
        reply = await receive(ws)
        assert reply["payload"]["data"]["serverInfo"]["environment"] == "test"
    finally:
        await ws.close()


@pytest.mark.parametrize("interval", [0, 301, -5])
async def test_heartbeat_interval_is_bounded(live_server, owner, interval):
    ws = await open_session(live_server, {"token": owner.token})
    try:
        assert (await receive(ws))["type"] == "connection_ack"
        await subscribe(ws, "x", HEARTBEAT, {"s": interval})
        message = await receive(ws)
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert errors[0]["extensions"]["details"] == {
            "intervalSeconds": "must be between 1 and 300"
        }
    finally:
        await ws.close()


async def test_subscribe_before_init_is_closed_4401(live_server):
    async with connect(ws_url(live_server), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        await subscribe(ws, "1", HEARTBEAT, {"s": 1})
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_origins(settings):
    app = app_with(settings, allowed_origins=["https://app.example.com"])
    async with running_server(app) as url:
        for headers in ({"Origin": "https://app.example.com"}, {}):
            ws = await open_session(url, None, additional_headers=headers)
            try:
                assert (await receive(ws))["type"] == "connection_ack"
            finally:
                await ws.close()
        for origin in ("https://evil.example.com", "http://app.example.com", "null"):
            with pytest.raises(InvalidStatus) as refused:
                await open_session(url, None, additional_headers={"Origin": origin})
            assert refused.value.response.status_code == 403
