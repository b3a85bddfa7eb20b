"""Shared executions of the `activity` subscription (gateway/http/fanout.py), over real
sockets: tenants and roles never cross, subscribers come and go independently, lapsed
principals are closed alone, different variables run apart, and a socket that stops
reading does not hold up the others. The number of shared executions is read from
/metrics (`switchboard_ws_shared_executions`, `switchboard_ws_shared_subscribers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from resolvers import events
from schema.relay import decode_id
from tests.conftest import (
    RUN_ID,
    Account,
    Store,
    eventually,
    gql,
    register,
    running_server,
)
from tests.members.test_members import CHANGE_ROLE, REMOVE, join, member_id
from tests.processes import redis_subscribed, two_gateways

ACTIVITY = "subscription($types: [String!]) { activity(types: $types) { id type data occurredAt } }"
# The same selection through a root fragment: not shared (fanout.py leaves fragments at
# the root to strawberry's own path), so it shows what an unshared subscriber gets.
UNSHARED = """subscription($types: [String!]) { ...A }
fragment A on Subscription { activity(types: $types) { id type data occurredAt } }"""
CREATE_CONTACT = """mutation($i: CreateContactInput!) {
  createContact(input: $i) { contact { id } } }"""
CREATE_KEY = """mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }"""


@pytest.fixture
def runtime(worker: Any) -> Callable[..., Awaitable[Any]]:
    """The outbox relay only (conftest's worker)."""
    return functools.partial(worker, run_jobs=False)


@pytest.fixture(params=["memory", "redis"])
def bus_settings(request: pytest.FixtureRequest, redis_url: str) -> dict[str, Any]:
    return {"redis_url": redis_url if request.param == "redis" else ""}


class Socket:
    """One graphql-transport-ws connection with one `activity` subscription, reading
    everything it is sent into `messages` from a background task."""

    def __init__(self, ws: Any, op_id: str) -> None:
        self.ws = ws
        self.id = op_id
        self.messages: list[dict[str, Any]] = []
        self.closed: ConnectionClosed | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        base_url: str,
        token: str,
        types: list[str] | None = None,
        *,
        query: str = ACTIVITY,
        read: bool = True,
        **connect: Any,
    ) -> AsyncIterator[Socket]:
        url = base_url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"], **connect) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
                )
            )
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["type"] == "connection_ack", ack
            sock = cls(ws, "s-" + uuid.uuid4().hex[:6])
            await sock.subscribe(query, types)
            if read:
                sock.start_reading()
            try:
                yield sock
            finally:
                if sock._reader is not None:
                    sock._reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sock._reader

    async def subscribe(self, query: str, types: list[str] | None) -> None:
        message = {
            "id": self.id,
            "type": "subscribe",
            "payload": {"query": query, "variables": {"types": types}},
        }
        await self.ws.send(json.dumps(message))

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
        except ConnectionClosed as closed:
            self.closed = closed
        else:
            self.closed = ConnectionClosed(self.ws.close_rcvd, self.ws.close_sent)

    def events(self) -> list[dict[str, Any]]:
        return [
            m["payload"]["data"]["activity"]
            for m in self.messages
            if m.get("type") == "next" and (m["payload"].get("data") or {}).get("activity")
        ]

    def has(self, event_type: str, **data: Any) -> bool:
        return any(
            e["type"] == event_type and all(e["data"].get(k) == v for k, v in data.items())
            for e in self.events()
        )

    async def close_code(self) -> int:
        async def closed() -> bool:
            return self.closed is not None

        await eventually(closed, "the server to close the socket")
        assert self.closed is not None and self.closed.rcvd is not None, self.closed
        return self.closed.rcvd.code


async def shared(url: str) -> tuple[float, float]:
    """(shared executions, subscribers they serve), as /metrics shows them."""
    async with httpx.AsyncClient(base_url=url) as c:
        text = (await c.get("/metrics")).text
    found = {}
    for line in text.splitlines():
        for name in ("switchboard_ws_shared_executions", "switchboard_ws_shared_subscribers"):
            if line.startswith(name + " "):
                found[name] = float(line.split()[1])
    return (
        found["switchboard_ws_shared_executions"],
        found["switchboard_ws_shared_subscribers"],
    )


async def until_shared(url: str, executions: float, subscribers: float) -> None:
    async def there() -> bool:
        return await shared(url) == (executions, subscribers)

    await eventually(there, f"{executions} shared executions serving {subscribers} subscribers")


async def until_subscribed(tenant_id: int) -> None:
    channel = events.channel_for(tenant_id)

    async def subscribed() -> bool:
        return await events.get_bus().subscriber_count(channel) > 0

    await eventually(subscribed, "the shared execution to reach the bus")


async def create_contact(client: httpx.AsyncClient, account: Account, name: str) -> str:
    body = await gql(client, CREATE_CONTACT, {"i": {"name": name}}, token=account.token)
    assert "errors" not in body, body
    contact_id: str = body["data"]["createContact"]["contact"]["id"]
    return contact_id


async def contact_reaches(
    client: httpx.AsyncClient, account: Account, name: str, *sockets: Any, what: str
) -> str:
    """Create a contact and wait until every one of `sockets` has its event; its id."""
    contact = await create_contact(client, account, name)

    async def arrived() -> bool:
        return all(s.has("contact.created", id=contact) for s in sockets)

    await eventually(arrived, what)
    return contact


async def api_key(client: httpx.AsyncClient, owner: Account, role: str) -> str:
    body = await gql(client, CREATE_KEY, {"i": {"name": role, "role": role}}, token=owner.token)
    assert "errors" not in body, body
    secret: str = body["data"]["createApiKey"]["secret"]
    return secret


def tenant_of(account: Account) -> int:
    return decode_id(account.org_id, "Organization")


async def test_two_tenants_and_two_roles_never_see_each_others_events(
    app: Any, client: httpx.AsyncClient, runtime: Any, bus_settings: dict[str, Any]
) -> None:
    """Same operation text in two tenants × two roles: four shared executions, each
    socket gets its own tenant's events only, and what it gets is exactly what an
    unshared subscriber of the same tenant and role gets. (No field under `activity` is
    role-restricted today; the role still keys the group, which the count shows.)"""
    await runtime(**bus_settings)
    a, b = await register(client, "A"), await register(client, "B")
    principals = {
        ("a", "OWNER"): a.token,
        ("a", "READ_ONLY"): await api_key(client, a, "READ_ONLY"),
        ("b", "OWNER"): b.token,
        ("b", "READ_ONLY"): await api_key(client, b, "READ_ONLY"),
    }
    async with running_server(app) as url, contextlib.AsyncExitStack() as stack:
        before = await shared(url)
        sockets: dict[tuple[str, str], list[Socket]] = {}
        for key, token in principals.items():
            sockets[key] = [
                await stack.enter_async_context(Socket.open(url, token)) for _ in range(2)
            ]
        plain = {
            org: await stack.enter_async_context(
                Socket.open(url, principals[(org, "READ_ONLY")], query=UNSHARED)
            )
            for org in ("a", "b")
        }
        await until_shared(url, before[0] + 4, before[1] + 8)
        for account in (a, b):
            await until_subscribed(tenant_of(account))
        a_contact = await create_contact(client, a, "Only A")
        b_contact = await create_contact(client, b, "Only B")
        everyone = [s for group in sockets.values() for s in group] + list(plain.values())

        async def delivered() -> bool:
            return all(
                s.has("contact.created", id=a_contact) or s.has("contact.created", id=b_contact)
                for s in everyone
            )

        await eventually(delivered, "every socket to get its tenant's contact")
        for (org, _role), group in sockets.items():
            mine, theirs = (a_contact, b_contact) if org == "a" else (b_contact, a_contact)
            for s in group:
                assert s.has("contact.created", id=mine)
                assert not s.has("contact.created", id=theirs)
                # Field for field what the unshared subscriber of this tenant received.
                assert s.events() == plain[org].events()
        assert not plain["a"].has("contact.created", id=b_contact)
        assert not plain["b"].has("contact.created", id=a_contact)


async def test_a_leaving_subscriber_does_not_end_the_others(
    app: Any, client: httpx.AsyncClient, runtime: Any, owner: Account
) -> None:
    await runtime()
    async with running_server(app) as url:
        before = await shared(url)
        async with Socket.open(url, owner.token) as stays:
            async with Socket.open(url, owner.token) as completes:
                async with Socket.open(url, owner.token):
                    await until_shared(url, before[0] + 1, before[1] + 3)
                # One closed its socket; another completes its operation.
                await completes.ws.send(json.dumps({"id": completes.id, "type": "complete"}))
                await until_shared(url, before[0] + 1, before[1] + 1)
                contact = await contact_reaches(
                    client, owner, "After they left", stays,
                    what="the remaining subscriber to get the event",
                )  # fmt: skip
                assert not completes.has("contact.created", id=contact)
        # The last one gone: the shared execution and its bus subscription end.
        await until_shared(url, before[0], before[1])

        async def unsubscribed() -> bool:
            channel = events.channel_for(tenant_of(owner))
            return await events.get_bus().subscriber_count(channel) == 0

        await eventually(unsubscribed, "the shared source to leave the bus")


async def test_different_variables_do_not_share(
    app: Any, client: httpx.AsyncClient, runtime: Any, owner: Account
) -> None:
    await runtime()
    async with running_server(app) as url:
        before = await shared(url)
        async with (
            Socket.open(url, owner.token) as everything,
            Socket.open(url, owner.token, ["lead.*"]) as leads,
            Socket.open(url, owner.token, ["contact.*"]) as contacts,
            Socket.open(url, owner.token, ["contact.*"]) as contacts_too,
        ):
            await until_shared(url, before[0] + 3, before[1] + 4)
            await contact_reaches(
                client, owner, "Filtered", everything, contacts, contacts_too,
                what="the contact event",
            )  # fmt: skip
            marker = await events.emit(tenant_of(owner), "lead.tested", {"n": 1})

            async def lead_arrived() -> bool:
                return leads.has("lead.tested") and everything.has("lead.tested")

            await eventually(lead_arrived, f"event {marker.id}")
            assert not leads.has("contact.created")
            assert not contacts.has("lead.tested")


@pytest.mark.parametrize("change", ["demoted", "removed"])
async def test_a_lapsed_member_is_closed_and_the_shared_execution_goes_on(
    app: Any, client: httpx.AsyncClient, runtime: Any, owner: Account, change: str
) -> None:
    await runtime()
    first, _ = await join(client, owner, "MANAGER")
    second, _ = await join(client, owner, "MANAGER")
    async with running_server(app) as url:
        before = await shared(url)
        async with Socket.open(url, first.token) as lapsed, Socket.open(url, second.token) as kept:
            await until_shared(url, before[0] + 1, before[1] + 2)
            mid = await member_id(client, owner, first.email)
            if change == "demoted":
                body = await gql(
                    client, CHANGE_ROLE, {"i": {"memberId": mid, "role": "SUPPORT"}}, owner.token
                )
            else:
                body = await gql(client, REMOVE, {"i": {"memberId": mid}}, owner.token)
            assert "errors" not in body, body
            assert await lapsed.close_code() == (4403 if change == "demoted" else 4401)
            await until_shared(url, before[0] + 1, before[1] + 1)
            contact = await contact_reaches(
                client, owner, "After the change", kept, what="the other manager to get the event"
            )
            assert not lapsed.has("contact.created", id=contact)
            if change == "removed":
                # Checked before each event: not even its own removal reached it as data.
                assert not lapsed.has("member.removed")


async def test_the_shared_stream_checks_each_subscriber_before_an_event_about_them(
    app: Any, client: httpx.AsyncClient, runtime: Any, owner: Account
) -> None:
    """Removed behind the gateway's back (no change notice, so no socket watcher fires):
    the shared execution's own check before the removal event (resolvers/events.py,
    through ctx.audience) ends that subscriber's stream alone, and the other subscriber
    of the same execution gets the event."""
    from models.members import Membership
    from resolvers.events import global_id

    await runtime()
    first, _ = await join(client, owner, "MANAGER")
    second, _ = await join(client, owner, "MANAGER")
    tenant_id = tenant_of(owner)
    user_id = decode_id(first.user_id, "User")
    async with running_server(app) as url:
        before = await shared(url)
        async with Socket.open(url, first.token) as gone, Socket.open(url, second.token) as kept:
            await until_shared(url, before[0] + 1, before[1] + 2)
            await until_subscribed(tenant_id)
            await Membership.filter(user_id=user_id, tenant_id=tenant_id).delete()
            await events.emit(tenant_id, "member.removed", {"userId": global_id("User", user_id)})

            async def delivered() -> bool:
                return kept.has("member.removed") and any(
                    m.get("type") == "complete" for m in gone.messages
                )

            await eventually(delivered, "the event for one, the end for the other")
            assert not gone.has("member.removed")
            [ended] = [m for m in gone.messages if m.get("type") == "next"]
            assert ended["payload"]["data"] is None
            assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            await until_shared(url, before[0] + 1, before[1] + 1)


async def test_expired_token_closes_only_its_socket(
    app: Any, client: httpx.AsyncClient, runtime: Any, owner: Account, settings: Any
) -> None:
    await runtime()
    claims = jwt.decode(owner.token, options={"verify_signature": False})
    claims.update(exp=int(time.time()) + 3, jti=uuid.uuid4().hex)
    kid, secret = settings.signing_keys[0]
    short = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
    async with running_server(app) as url:
        before = await shared(url)
        async with Socket.open(url, short) as expiring, Socket.open(url, owner.token) as kept:
            await until_shared(url, before[0] + 1, before[1] + 2)
            assert await expiring.close_code() == 4401
            await until_shared(url, before[0] + 1, before[1] + 1)
            await contact_reaches(
                client,
                owner,
                "After the expiry",
                kept,
                what="the remaining socket to get the event",
            )


def _small_buffer_socket(url: str) -> socket.socket:
    """A connected client socket with a tiny receive buffer, so a client that stops
    reading makes the server's writes wait soon."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


async def test_a_socket_that_stops_reading_does_not_hold_up_the_others(
    app: Any, client: httpx.AsyncClient, runtime: Any, owner: Account
) -> None:
    await runtime()
    tenant_id = tenant_of(owner)
    blob = "x" * 60_000
    async with running_server(app) as url:
        before = await shared(url)
        async with (
            Socket.open(url, owner.token) as reader,
            Socket.open(
                url, owner.token, read=False, sock=_small_buffer_socket(url), max_queue=1
            ) as stalled,
        ):
            await until_shared(url, before[0] + 1, before[1] + 2)
            await until_subscribed(tenant_id)
            sent = 0
            # Until the stalled socket's backlog overflows and it alone is dropped.
            while (await shared(url))[1] > before[1] + 1:
                assert sent < 3000, "the stalled socket was never dropped"
                for _ in range(20):
                    await events.emit(tenant_id, "bulk.tested", {"n": sent, "blob": blob})
                    sent += 1
                target = sent

                async def caught_up(target: int = target) -> bool:
                    return reader.has("bulk.tested", n=target - 1)

                await eventually(caught_up, f"the reading socket to get event {target}")
            # Still shared, still delivering to the socket that reads.
            await events.emit(tenant_id, "bulk.tested", {"n": "last"})

            async def last() -> bool:
                return reader.has("bulk.tested", n="last")

            await eventually(last, "the last event")
            assert len([e for e in reader.events() if e["type"] == "bulk.tested"]) == sent + 1
            # The stalled one, when it reads again, finds its subscription ended.
            stalled.start_reading()

            async def ended() -> bool:
                return any(m.get("type") == "complete" for m in stalled.messages)

            await eventually(ended, "the stalled subscription's end")
            [error] = [m for m in stalled.messages if m.get("payload", {}).get("errors")]
            assert error["payload"]["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert error["payload"]["data"] is None


async def test_shared_across_gateway_processes_over_redis(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    """An event committed through one gateway process reaches the shared subscribers of
    its tenant on another (Redis bus), and not the other tenant's."""
    async with two_gateways(store, redis_url, tmp_path, f"sbtest-{RUN_ID}") as (one, two):
        async with httpx.AsyncClient(base_url=two) as on_two:
            a, b = await register(on_two, "A"), await register(on_two, "B")
            async with (
                Socket.open(one, a.token) as a1,
                Socket.open(one, a.token) as a2,
                Socket.open(one, b.token) as b1,
            ):
                await until_shared(one, 2, 3)
                channel = f"sbtest-{RUN_ID}:{events.channel_for(tenant_of(a))}"
                await redis_subscribed(redis_url, channel, "server one to subscribe on Redis")
                contact = await contact_reaches(
                    on_two, a, "Across processes", a1, a2,
                    what="both of A's sockets to get the event",
                )  # fmt: skip
                assert not b1.has("contact.created", id=contact)
