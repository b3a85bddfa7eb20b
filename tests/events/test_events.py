"""Domain events: the transactional outbox, the relay, listeners, and the `activity`
subscription, in one process (SQLite and PostgreSQL) and across two real gateway
processes (PostgreSQL + Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from tortoise.transactions import in_transaction

from gateway.worker import Runtime
from models.events import OutboxEvent
from models.jobs import Job
from models.tenants import Tenant
from resolvers import events, jobs
from resolvers.events import Event, listener
from resolvers.jobs import JobContext, job_handler
from schema.relay import decode_id, encode_id
from tests.conftest import (
    RUN_ID,
    Account,
    Store,
    eventually,
    free_port,
    gql,
    make_settings,
    register,
    running_server,
)
from tests.processes import redis_subscribed, two_gateways


@pytest.fixture
def runtime(worker: Any) -> Callable[..., Awaitable[Runtime]]:
    """conftest's worker, relay only: these tests start the job side themselves."""
    return functools.partial(worker, run_jobs=False)


async def new_tenant() -> Tenant:
    return await Tenant.create(name="T", slug=f"t-{uuid.uuid4().hex[:10]}")


class Collector:
    """Reads one tenant's events into a list from a background task."""

    def __init__(self, tenant_id: int, types: list[str] | None = None) -> None:
        self.tenant_id = tenant_id
        self.items: list[Event] = []
        self._task = asyncio.create_task(self._run(types))

    async def _run(self, types: list[str] | None) -> None:
        async for event in events.subscribe(self.tenant_id, types):
            self.items.append(event)

    async def ready(self) -> None:
        channel = events.channel_for(self.tenant_id)

        async def subscribed() -> bool:
            return await events.get_bus().subscriber_count(channel) > 0

        await eventually(subscribed, "the subscription to reach the bus")

    async def wait_for(self, type: str) -> Event:
        async def arrived() -> bool:
            return any(e.type == type for e in self.items)

        await eventually(arrived, f"a {type} event")
        return next(e for e in self.items if e.type == type)

    async def close(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


@pytest.fixture(params=["memory", "redis"])
def bus_settings(request: pytest.FixtureRequest, redis_url: str) -> dict[str, Any]:
    """The event bus in-process, then on Redis."""
    return {"redis_url": redis_url if request.param == "redis" else ""}


async def test_rolled_back_change_emits_nothing(runtime: Any, bus_settings: Any) -> None:
    await runtime(**bus_settings)
    tenant = await new_tenant()
    sub = Collector(tenant.id)
    await sub.ready()
    with pytest.raises(RuntimeError):
        async with in_transaction() as conn:
            await events.emit(tenant.id, "thing.rolled_back", {"n": 1}, connection=conn)
            raise RuntimeError("the change failed")
    async with in_transaction() as conn:
        await events.emit(tenant.id, "thing.committed", {"n": 2}, connection=conn)
    # Without `connection`, emit joins the caller's current transaction too.
    with pytest.raises(RuntimeError):
        async with in_transaction():
            await events.emit(tenant.id, "thing.rolled_back_implicit", {})
            raise RuntimeError("the change failed")
    await events.emit(tenant.id, "thing.last", {})
    await sub.wait_for("thing.last")
    await sub.close()
    assert [e.type for e in sub.items] == ["thing.committed", "thing.last"]
    assert sub.items[0].data == {"n": 2}
    stored = await OutboxEvent.filter(tenant_id=tenant.id).values_list("type", flat=True)
    assert sorted(stored) == ["thing.committed", "thing.last"]


async def test_relay_publishes_rows_a_crash_left_unpublished(
    runtime: Any, bus_settings: Any
) -> None:
    tenant = await new_tenant()
    await runtime(**bus_settings)
    sub = Collector(tenant.id)
    await sub.ready()
    # As if the process died after commit and before publishing: a committed row and no
    # post-commit nudge. The relay's poll (the safety net) publishes it.
    row = await OutboxEvent.create(tenant_id=tenant.id, type="contact.created", data={"id": 7})

    event = await sub.wait_for("contact.created")
    await sub.close()
    assert event.id == row.id and event.data == {"id": 7}
    assert (await OutboxEvent.get(id=row.id)).published_at is not None


async def test_subscriber_only_sees_its_tenant_and_types(runtime: Any, bus_settings: Any) -> None:
    await runtime(**bus_settings)
    mine, other = await new_tenant(), await new_tenant()
    sub = Collector(mine.id, ["contact.*", "lead.status_changed"])
    await sub.ready()
    foreign = await events.emit(other.id, "contact.created", {"secret": "theirs"})

    async def foreign_published() -> bool:
        return (await OutboxEvent.get(id=foreign.id)).published_at is not None

    await eventually(foreign_published, "the other tenant's event to be published")
    await events.emit(mine.id, "task.completed", {})  # filtered out by type
    await events.emit(mine.id, "lead.status_changed", {"to": "won"})
    await events.emit(mine.id, "contact.deleted", {"id": 1})
    await sub.wait_for("contact.deleted")
    await sub.close()
    assert [e.type for e in sub.items] == ["lead.status_changed", "contact.deleted"]
    assert all(e.tenant_id == mine.id for e in sub.items)


async def test_emit_rejects_badly_named_types(store: Store) -> None:
    tenant = await new_tenant()
    for bad in ("Contact.Created", "contact", "contact created", ""):
        with pytest.raises(ValueError, match=r"area\.verb_past"):
            await events.emit(tenant.id, bad, {})


# Listeners -----------------------------------------------------------------------------

FANNED: list[tuple[int, int]] = []


@job_handler("events_test.fanout")
async def fanout_job(ctx: JobContext, payload: dict) -> None:
    FANNED.append((payload["event_id"], ctx.job_id))


@listener("fanout_test.*")
async def enqueue_per_event(event: Event, connection: Any) -> None:
    await jobs.enqueue(
        "events_test.fanout",
        {"event_id": event.id},
        tenant_id=event.tenant_id,
        connection=connection,
    )


@listener("flaky_test.*")
async def always_breaks(event: Event, connection: Any) -> None:
    await jobs.enqueue("events_test.fanout", {"event_id": event.id}, connection=connection)
    raise RuntimeError("listener bug")


async def test_listener_runs_once_per_event_in_the_relay_transaction(
    runtime: Any, bus_settings: Any
) -> None:
    tenant = await new_tenant()
    emitted = [await events.emit(tenant.id, "fanout_test.happened", {"n": n}) for n in range(5)]
    # Two relays in this process compete for the same rows.
    await runtime(**bus_settings)
    await runtime(**bus_settings)

    async def all_published() -> bool:
        ids = [e.id for e in emitted]
        return await OutboxEvent.filter(id__in=ids, published_at__isnull=True).count() == 0

    await eventually(all_published, "every event to be published")
    queued = await Job.filter(kind="events_test.fanout", tenant_id=tenant.id).values_list(
        "payload", flat=True
    )
    assert sorted(p["event_id"] for p in queued) == sorted(e.id for e in emitted)


async def test_failing_listener_is_retried_then_given_up(runtime: Any) -> None:
    tenant = await new_tenant()
    row = await events.emit(tenant.id, "flaky_test.happened", {})
    await runtime()

    async def published() -> bool:
        return (await OutboxEvent.get(id=row.id)).published_at is not None

    await eventually(published, "the event to be published despite its listener")
    final = await OutboxEvent.get(id=row.id)
    assert final.relay_attempts == events.MAX_LISTENER_ATTEMPTS
    assert "listener bug" in (final.last_error or "")
    # Each failed try's writes were rolled back with it.
    assert not await Job.filter(kind="events_test.fanout", payload={"event_id": row.id}).exists()


# The activity subscription over WebSocket ------------------------------------------------

ACTIVITY = "subscription($types: [String!]) { activity(types: $types) { id type data occurredAt } }"
INVITE = """
mutation($input: InviteMemberInput!) { inviteMember(input: $input) { invitation { id } } }"""


class Subscriber:
    """A graphql-transport-ws client over a real WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, base_url: str, token: str | None, types: list[str] | None = None
    ) -> AsyncIterator[Subscriber]:
        url = base_url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            payload = {"Authorization": f"Bearer {token}"} if token else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["type"] == "connection_ack", ack
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": ACTIVITY, "variables": {"types": types}},
                    }
                )
            )
            yield cls(ws)

    async def next(self, limit: float = 15) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.ws.recv(), limit))
        return message


async def invite(client: httpx.AsyncClient, account: Account) -> int:
    body = await gql(
        client,
        INVITE,
        {"input": {"email": f"x-{uuid.uuid4().hex[:8]}@example.com", "role": "SUPPORT"}},
        token=account.token,
    )
    assert "errors" not in body, body
    return decode_id(body["data"]["inviteMember"]["invitation"]["id"], "Invitation")


async def wait_subscribed(tenant_id: int) -> None:
    channel = events.channel_for(tenant_id)

    async def subscribed() -> bool:
        return await events.get_bus().subscriber_count(channel) > 0

    await eventually(subscribed, "the WebSocket subscription to reach the bus")


async def test_activity_streams_member_events_of_the_callers_tenant(
    app: Any, client: httpx.AsyncClient, runtime: Any, redis_url: str
) -> None:
    await runtime(redis_url=redis_url)
    a = await register(client, "A")
    b = await register(client, "B")
    tenant_a = decode_id(a.org_id, "Organization")
    async with running_server(app) as url, Subscriber.open(url, a.token, ["member.*"]) as sub:
        await wait_subscribed(tenant_a)
        b_invitation = await invite(client, b)

        async def b_published() -> bool:
            return not await OutboxEvent.filter(
                tenant_id=decode_id(b.org_id, "Organization"), published_at__isnull=True
            ).exists()

        await eventually(b_published, "B's event to be published")
        a_invitation = await invite(client, a)
        message = await sub.next()
        assert message["type"] == "next", message
        event = message["payload"]["data"]["activity"]
        assert event["type"] == "member.invited"
        assert a_invitation != b_invitation
        assert event["data"]["id"] == str(encode_id("Invitation", a_invitation))
        assert event["data"]["role"] == "SUPPORT" and event["occurredAt"]


async def test_activity_needs_authentication_and_valid_types(
    app: Any, client: httpx.AsyncClient, owner: Account
) -> None:
    async with running_server(app) as url:
        async with Subscriber.open(url, None) as sub:
            message = await sub.next()
            assert message["type"] == "error"
            assert message["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        async with Subscriber.open(url, owner.token, ["Not A Type!"]) as sub:
            message = await sub.next()
            # The stream starts, then ends with a coded error in its payload.
            assert message["type"] == "next", message
            (error,) = message["payload"]["errors"]
            assert error["extensions"]["code"] == "BAD_USER_INPUT"
            assert error["extensions"]["details"] == {
                "types": "each is like `contact.created` or `contact.*`"
            }
            assert message["payload"]["data"] is None
            assert (await sub.next())["type"] == "complete"


# Two gateway processes ----------------------------------------------------------------


async def test_event_from_one_gateway_process_reaches_a_subscriber_on_another(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    async with two_gateways(store, redis_url, tmp_path, f"sbtest-{RUN_ID}") as (one, two):
        async with httpx.AsyncClient(base_url=two) as on_two:
            a = await register(on_two, "A")
            b = await register(on_two, "B")
            tenant_a, tenant_b = (decode_id(x.org_id, "Organization") for x in (a, b))
            async with Subscriber.open(one, a.token) as sub:
                channel = f"sbtest-{RUN_ID}:{events.channel_for(tenant_a)}"
                await redis_subscribed(redis_url, channel, "server one to subscribe on Redis")
                await invite(on_two, b)

                async def b_published() -> bool:
                    return not await OutboxEvent.filter(
                        tenant_id=tenant_b, published_at__isnull=True
                    ).exists()

                await eventually(b_published, "B's events to be published")
                invitation = await invite(on_two, a)
                message = await sub.next()
                assert message["type"] == "next", message
                event = message["payload"]["data"]["activity"]
                assert event["type"] == "member.invited"
                assert event["data"]["id"] == str(encode_id("Invitation", invitation))


async def test_activity_stream_ends_when_the_caller_is_removed(
    app: Any, client: httpx.AsyncClient, runtime: Any, owner: Account
) -> None:
    from models.mail import OutboundEmail

    await runtime()
    tenant_id = decode_id(owner.org_id, "Organization")
    email = f"m-{uuid.uuid4().hex[:8]}@example.com"
    body = await gql(
        client, INVITE, {"input": {"email": email, "role": "SUPPORT"}}, token=owner.token
    )
    assert "errors" not in body, body
    mail = await OutboundEmail.filter(recipient=email).order_by("-id").first()
    assert mail is not None
    found = re.search(r"#token=([A-Za-z0-9_-]{40,})$", mail.text, re.MULTILINE)
    assert found, mail.text
    token = found.group(1)
    body = await gql(
        client,
        "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { accessToken } }",
        {"i": {"token": token, "name": "M", "password": "correct horse battery staple"}},
    )
    assert "errors" not in body, body
    member_token = body["data"]["acceptInvitation"]["accessToken"]
    members = await gql(
        client, "query { members { edges { node { id role } } } }", token=owner.token
    )
    member_id = next(
        e["node"]["id"]
        for e in members["data"]["members"]["edges"]
        if e["node"]["role"] == "SUPPORT"
    )
    async with running_server(app) as url, Subscriber.open(url, member_token) as sub:
        await wait_subscribed(tenant_id)
        await invite(client, owner)
        first = await sub.next()
        assert first["payload"]["data"]["activity"]["type"] == "member.invited"
        body = await gql(
            client,
            "mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }",
            {"i": {"memberId": member_id}},
            token=owner.token,
        )
        assert "errors" not in body, body
        # The socket is closed with 4401 (gateway/http/websocket.py), unless the stream's
        # own check ends it first with a coded error; either way no event data arrives.
        try:
            message = await sub.next()
            while _is_mail_event(message):  # the invitation's mail, queued after it
                message = await sub.next()
        except websockets.exceptions.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4401
        else:
            assert message["type"] == "next", message
            assert message["payload"]["data"] is None  # not even its own removal event
            assert message["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def _is_mail_event(message: dict[str, Any]) -> bool:
    data = (message.get("payload") or {}).get("data") or {}
    return str((data.get("activity") or {}).get("type", "")).startswith("email.")


async def test_event_data_is_stored_as_plain_json(store: Store) -> None:
    import datetime as dt
    from decimal import Decimal

    tenant = await new_tenant()
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    row = await events.emit(
        tenant.id, "lead.created", {"value": Decimal("12.50"), "at": when, "tags": ("a",)}
    )
    stored = await OutboxEvent.get(id=row.id)
    assert stored.data == {"value": "12.50", "at": str(when), "tags": ["a"]}


async def test_listeners_still_run_when_the_bus_is_down(runtime: Any) -> None:
    """Webhook fan-out must not wait for Redis: only live subscribers miss the event."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    await runtime(redis_url=dead_redis)
    tenant = await new_tenant()
    row = await events.emit(tenant.id, "fanout_test.happened", {})

    async def published() -> bool:
        return (await OutboxEvent.get(id=row.id)).published_at is not None

    await eventually(published, "the event to be marked published")
    assert await Job.filter(kind="events_test.fanout", payload={"event_id": row.id}).exists()


async def test_commit_nudges_the_relay_and_the_worker_at_once(store: Store) -> None:
    """With polling effectively off, only the post-commit nudges can deliver these."""
    rt = Runtime(
        make_settings(database_url=store.url, outbox_poll_seconds=3600, job_poll_seconds=3600),
        run_jobs=True,
    )
    await rt.start()
    try:
        await asyncio.sleep(0.1)  # let the loops reach their (hour-long) waits
        tenant = await new_tenant()
        sub = Collector(tenant.id)
        await sub.ready()
        async with in_transaction() as conn:
            await events.emit(tenant.id, "nudge_test.happened", {}, connection=conn)
            job = await jobs.enqueue("events_test.fanout", {"event_id": -1}, connection=conn)
            # Not before commit: the transaction is still open here.
            await asyncio.sleep(0.1)
            assert sub.items == []
        await sub.wait_for("nudge_test.happened")

        async def ran() -> bool:
            return (await Job.get(id=job.id)).status == "succeeded"

        await eventually(ran, "the job to run")
        await sub.close()
    finally:
        await rt.stop()
