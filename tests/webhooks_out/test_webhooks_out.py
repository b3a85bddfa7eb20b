"""Outgoing webhooks to a real receiver on loopback, on SQLite and PostgreSQL.

The receiver verifies every delivery with the `standardwebhooks` package and dedupes on
`webhook-id`, as a well-behaved consumer would. The crash proof kills a worker process
in the middle of an attempt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kit.settings import Settings
from models.events import OutboxEvent
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from resolvers import webhooks_out
from resolvers.events import Event, emit
from resolvers.jobs import now
from schema.relay import decode_id
from tests.conftest import (
    Store,
    error_codes,
    eventually,
    gql,
    make_settings,
    register,
    running_server,
)

ROOT = Path(__file__).resolve().parents[2]


# The receiver ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"
    hang: bool = False


@dataclass
class Receiver:
    url: str = ""
    secrets: list[str] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)  # replies in order, then 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def verified_with(self, secret: str, request: dict[str, Any]) -> bool:
        try:
            Webhook(secret).verify(request["body"], request["headers"])
        except (WebhookVerificationError, ValueError):
            return False
        return True

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items()}
        record = {"path": request.url.path, "headers": headers, "body": body}
        self.requests.append(record)
        if not any(self.verified_with(s, record) for s in self.secrets):
            return Response("bad signature", status_code=401)
        reply = self.script.pop(0) if self.script else Reply()
        if reply.hang:
            await self.release.wait()
        if 200 <= reply.status < 300:
            msg_id = headers["webhook-id"]
            if msg_id in self.seen_ids:
                self.duplicates += 1
            self.seen_ids.add(msg_id)
        return Response(reply.body, status_code=reply.status, headers=reply.headers)

    async def elsewhere(self, request: Request) -> Response:
        self.requests.append({"path": request.url.path, "headers": {}, "body": b""})
        return Response("should never be reached")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = Starlette(
        routes=[
            Route("/hook", rec.handle, methods=["POST"]),
            Route("/elsewhere", rec.elsewhere, methods=["GET", "POST"]),
        ]
    )
    async with running_server(app) as url:
        rec.url = f"{url}/hook"
        try:
            yield rec
        finally:
            rec.release.set()


# The gateway ----------------------------------------------------------------------------


@pytest.fixture
def settings(store: Store) -> Settings:
    return make_settings(database_url=store.url, webhook_allowed_hosts=["127.0.0.1/32"])


CREATE = """
mutation($i: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $i) { secret endpoint { id url eventTypes enabled } }
}"""
DELIVERIES = """
query($e: ID, $s: WebhookDeliveryStatus) {
  webhookDeliveries(endpointId: $e, status: $s) {
    edges { node {
      id eventType messageId status attemptCount lastStatusCode body
      endpoint { id url }
      attempts { edges { node { number statusCode durationMs responseBody error manual
                                 finishedAt } } }
    } }
  }
}"""
ENDPOINT_OP = """
mutation($i: WebhookEndpointInput!) {
  %s(input: $i) { endpoint { id enabled disabledReason secretRotatedAt } %s }
}"""
DELETE = """mutation($i: WebhookEndpointInput!) {
  deleteWebhookEndpoint(input: $i) { deletedId } }"""
TEST = "mutation($i: WebhookEndpointInput!) { sendTestWebhook(input: $i) { delivery { id } } }"
RESEND = """mutation($i: ResendWebhookDeliveryInput!) {
  resendWebhookDelivery(input: $i) { delivery { id status attemptCount } } }"""


async def create_endpoint(
    client: httpx.AsyncClient, token: str, url: str, types: list[str] | None = None
) -> tuple[str, str]:
    # By default the test event only: the registration's own mail (email.queued, email.sent)
    # must not reach receivers that count requests.
    wanted = ["webhook.test"] if types is None else types
    body = await gql(client, CREATE, {"i": {"url": url, "eventTypes": wanted}}, token=token)
    assert "errors" not in body, body
    data = body["data"]["createWebhookEndpoint"]
    return data["endpoint"]["id"], data["secret"]


async def deliveries(client: httpx.AsyncClient, token: str, endpoint_id: str) -> list[Any]:
    body = await gql(client, DELIVERIES, {"e": endpoint_id}, token=token)
    assert "errors" not in body, body
    return [e["node"] for e in body["data"]["webhookDeliveries"]["edges"]]


async def delivery_row(endpoint_gid: str) -> WebhookDelivery | None:
    return await WebhookDelivery.filter(endpoint_id=decode_id(endpoint_gid)).first()


async def settled(endpoint_gid: str, status: str = "succeeded") -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        row = await delivery_row(endpoint_gid)
        return row is not None and row.status == status

    return check


# Tests ----------------------------------------------------------------------------------


async def test_domain_event_delivered_signed_once_per_subscribed_endpoint(
    client: httpx.AsyncClient, receiver: Receiver, worker: Any
) -> None:
    acct = await register(client)
    tenant_id = decode_id(acct.org_id)
    wanted, secret = await create_endpoint(client, acct.token, receiver.url, ["test_contact.*"])
    other, other_secret = await create_endpoint(client, acct.token, receiver.url, ["invoice.*"])
    receiver.secrets = [secret, other_secret]
    assert secret.startswith("whsec_") and len(secret) >= len("whsec_") + 32
    stored = await WebhookEndpoint.get(id=decode_id(wanted))
    assert secret not in stored.secret_encrypted  # encrypted at rest

    row = await emit(tenant_id, "test_contact.created", {"name": "Ada"})
    await worker()
    await eventually(await settled(wanted), "the delivery succeeds")

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert receiver.verified_with(secret, request)
    assert not receiver.verified_with(other_secret, request)
    payload = Webhook(secret).verify(request["body"], request["headers"])
    assert payload["type"] == "test_contact.created" and payload["data"] == {"name": "Ada"}
    assert request["headers"]["content-type"] == "application/json"

    # the listener is idempotent per (event, endpoint): a second pass adds nothing
    from tortoise.transactions import in_transaction

    async with in_transaction() as conn:
        await webhooks_out.deliver_event(Event.from_row(row), conn)
    assert await WebhookDelivery.filter(event_id=row.id).count() == 1
    assert await delivery_row(other) is None

    nodes = await deliveries(client, acct.token, wanted)
    assert len(nodes) == 1
    node = nodes[0]
    assert node["status"] == "SUCCEEDED" and node["lastStatusCode"] == 200
    assert node["messageId"] == request["headers"]["webhook-id"]
    assert node["endpoint"]["id"] == wanted
    attempts = [e["node"] for e in node["attempts"]["edges"]]
    assert len(attempts) == 1
    assert attempts[0]["statusCode"] == 200 and attempts[0]["responseBody"] == "ok"
    assert attempts[0]["finishedAt"] and attempts[0]["durationMs"] is not None


async def test_retry_after_a_500_keeps_the_same_webhook_id(
    client: httpx.AsyncClient, receiver: Receiver, worker: Any
) -> None:
    acct = await register(client)
    endpoint, secret = await create_endpoint(client, acct.token, receiver.url)
    receiver.secrets = [secret]
    receiver.script = [Reply(500, body="x" * 5000)]
    await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    await worker(webhook_retry_schedule=[0, 0.05])  # Svix's 5 s step, shortened
    await eventually(await settled(endpoint), "the second attempt succeeds")
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(ids) == 2 and ids[0] == ids[1]
    stamps = [int(r["headers"]["webhook-timestamp"]) for r in receiver.requests]
    assert stamps[1] >= stamps[0]  # each attempt is signed when it is made
    node = (await deliveries(client, acct.token, endpoint))[0]
    attempts = [e["node"] for e in node["attempts"]["edges"]]
    assert [a["number"] for a in attempts] == [2, 1]
    first = attempts[1]
    assert first["statusCode"] == 500 and first["error"] == "HTTP 500"
    assert len(first["responseBody"]) == 1024  # cut at 1 KiB
    assert first["manual"] is True and attempts[0]["manual"] is False


async def test_410_disables_the_endpoint_and_tells_the_owner(
    client: httpx.AsyncClient, receiver: Receiver, worker: Any
) -> None:
    acct = await register(client)
    endpoint, secret = await create_endpoint(client, acct.token, receiver.url)
    receiver.secrets = [secret]
    receiver.script = [Reply(410)]
    await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    await worker()
    await eventually(await settled(endpoint, "failed"), "the delivery fails")
    row = await WebhookEndpoint.get(id=decode_id(endpoint))
    assert row.enabled is False and "410" in (row.disabled_reason or "")
    told = await OutboxEvent.filter(
        tenant_id=decode_id(acct.org_id), type="webhook_endpoint.disabled"
    )
    assert len(told) == 1 and told[0].data["endpointId"] == row.id
    assert len(receiver.requests) == 1

    again = await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    assert error_codes(again) == ["BAD_USER_INPUT"]
    enabled = await gql(
        client,
        ENDPOINT_OP % ("enableWebhookEndpoint", ""),
        {"i": {"id": endpoint}},
        token=acct.token,
    )
    assert enabled["data"]["enableWebhookEndpoint"]["endpoint"]["enabled"] is True


async def test_failing_for_five_days_disables(
    client: httpx.AsyncClient, receiver: Receiver, worker: Any
) -> None:
    acct = await register(client)
    endpoint, secret = await create_endpoint(client, acct.token, receiver.url)
    receiver.secrets = [secret]
    receiver.script = [Reply(503)]
    await WebhookEndpoint.filter(id=decode_id(endpoint)).update(
        failing_since=now() - dt.timedelta(days=5, minutes=1)
    )
    await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    await worker()
    await eventually(await settled(endpoint, "failed"), "the delivery fails")
    row = await WebhookEndpoint.get(id=decode_id(endpoint))
    assert row.enabled is False and "5 days" in (row.disabled_reason or "")
    assert await OutboxEvent.filter(
        tenant_id=decode_id(acct.org_id), type="webhook_endpoint.disabled"
    ).exists()


async def test_rotation_signs_with_both_secrets_and_resend_keeps_the_id(
    client: httpx.AsyncClient, receiver: Receiver, worker: Any
) -> None:
    acct = await register(client)
    endpoint, old = await create_endpoint(client, acct.token, receiver.url)
    rotated = await gql(
        client,
        ENDPOINT_OP % ("rotateWebhookSecret", "secret"),
        {"i": {"id": endpoint}},
        token=acct.token,
    )
    new = rotated["data"]["rotateWebhookSecret"]["secret"]
    assert new != old and rotated["data"]["rotateWebhookSecret"]["endpoint"]["secretRotatedAt"]
    receiver.secrets = [new]
    await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    await worker()
    await eventually(await settled(endpoint), "the test message arrives")
    request = receiver.requests[0]
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    assert receiver.verified_with(new, request) and receiver.verified_with(old, request)

    # after the 24 h of grace only the new secret signs
    await WebhookEndpoint.filter(id=decode_id(endpoint)).update(
        previous_secret_expires_at=now() - dt.timedelta(seconds=1)
    )
    delivery_id = (await deliveries(client, acct.token, endpoint))[0]["id"]
    resent = await gql(client, RESEND, {"i": {"id": delivery_id}}, token=acct.token)
    assert resent["data"]["resendWebhookDelivery"]["delivery"]["status"] == "PENDING"

    async def two() -> bool:
        return len(receiver.requests) == 2 and (await delivery_row(endpoint)).status == "succeeded"  # type: ignore[union-attr]

    await eventually(two, "the resend arrives")
    second = receiver.requests[1]
    assert second["headers"]["webhook-id"] == request["headers"]["webhook-id"]
    assert receiver.verified_with(new, second) and not receiver.verified_with(old, second)
    assert receiver.duplicates == 1  # the receiver recognised the resend by its id


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient, receiver: Receiver, worker: Any
) -> None:
    acct = await register(client)
    endpoint, secret = await create_endpoint(client, acct.token, receiver.url)
    receiver.secrets = [secret]
    receiver.script = [
        Reply(307, headers={"location": receiver.url.replace("/hook", "/elsewhere")})
    ]
    await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    await worker()

    async def attempted() -> bool:
        return await WebhookAttempt.filter(
            delivery__endpoint_id=decode_id(endpoint), finished_at__not_isnull=True
        ).exists()

    await eventually(attempted, "the first attempt finishes")
    attempt = await WebhookAttempt.filter(delivery__endpoint_id=decode_id(endpoint)).first()
    assert attempt is not None and attempt.status_code == 307
    assert "redirects are not followed" in (attempt.error or "")
    assert [r["path"] for r in receiver.requests] == ["/hook"]


async def test_endpoint_input_errors_and_tenancy(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    acct = await register(client)
    for url in (
        "http://169.254.169.254/latest",
        "http://localhost:8080/hook",
        "http://[::ffff:127.0.0.2]/",
        "ftp://example.com/",
        "http://2130706433/",
        "",
    ):
        body = await gql(client, CREATE, {"i": {"url": url}}, token=acct.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], url
        assert "url" in body["errors"][0]["extensions"]["details"]
    bad_types = await gql(
        client, CREATE, {"i": {"url": receiver.url, "eventTypes": ["Not A Type"]}}, token=acct.token
    )
    assert "eventTypes" in bad_types["errors"][0]["extensions"]["details"]
    assert await WebhookEndpoint.filter(tenant_id=decode_id(acct.org_id)).count() == 0

    endpoint, _ = await create_endpoint(client, acct.token, receiver.url)
    other = await register(client)
    for op in ("disableWebhookEndpoint", "rotateWebhookSecret", "deleteWebhookEndpoint"):
        extra = "secret" if op == "rotateWebhookSecret" else ""
        query = ENDPOINT_OP % (op, extra)
        if op == "deleteWebhookEndpoint":
            query = DELETE
        denied = await gql(client, query, {"i": {"id": endpoint}}, token=other.token)
        assert error_codes(denied) == ["NOT_FOUND"], op
    theirs = await gql(client, DELIVERIES, {"e": endpoint}, token=other.token)
    assert error_codes(theirs) == ["NOT_FOUND"]

    updated = await gql(
        client,
        """mutation($i: UpdateWebhookEndpointInput!) {
          updateWebhookEndpoint(input: $i) { endpoint { eventTypes url } } }""",
        {"i": {"id": endpoint, "eventTypes": ["contact.*", "contact.*", "lead.created"]}},
        token=acct.token,
    )
    assert updated["data"]["updateWebhookEndpoint"]["endpoint"]["eventTypes"] == [
        "contact.*",
        "lead.created",
    ]
    deleted = await gql(client, DELETE, {"i": {"id": endpoint}}, token=acct.token)
    assert deleted["data"]["deleteWebhookEndpoint"]["deletedId"] == endpoint
    assert not await WebhookEndpoint.filter(id=decode_id(endpoint)).exists()


def test_retry_schedule_jitter_and_retry_after() -> None:
    schedule = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert webhooks_out.RETRY_SCHEDULE == schedule
    plain = webhooks_out.Outcome(status_code=500)
    for made, base in enumerate(schedule):
        for _ in range(20):
            delay = webhooks_out.next_delay(made, plain)
            assert delay is not None and base * 0.8 <= delay <= base * 1.2
    assert webhooks_out.next_delay(len(schedule), plain) is None
    throttled = webhooks_out.Outcome(status_code=429)
    assert webhooks_out.next_delay(1, throttled) >= 60  # type: ignore[operator]
    timed_out = webhooks_out.Outcome(error="timed out", timed_out=True)
    assert webhooks_out.next_delay(1, timed_out) >= 60  # type: ignore[operator]
    told = webhooks_out.Outcome(status_code=503, retry_after=900)
    assert webhooks_out.next_delay(1, told) == 900
    assert webhooks_out.parse_retry_after("120") == 120
    assert webhooks_out.parse_retry_after("soon") is None
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    header = "Tue, 01 Jan 2030 00:10:00 GMT"
    assert webhooks_out.parse_retry_after(header, at=at.timestamp()) == 600
    assert webhooks_out.parse_retry_after("99999999") == webhooks_out.MAX_RETRY_AFTER


# Crash proof ------------------------------------------------------------------------------


def _worker_process(store: Store) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SWITCHBOARD_ENV": "test",
        "DATABASE_URL": store.url,
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1/32",
        "JOB_LEASE_SECONDS": "1",
        "JOB_POLL_SECONDS": "0.1",
        "OUTBOX_POLL_SECONDS": "0.2",
        "LOG_JSON": "false",
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": "",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_killed_worker_mid_delivery_then_same_webhook_id(
    store: Store, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    if store.kind != "postgres":
        pytest.skip("two processes share the store: PostgreSQL")
    acct = await register(client)
    endpoint, secret = await create_endpoint(client, acct.token, receiver.url)
    receiver.secrets = [secret]
    receiver.script = [Reply(hang=True)]  # the first attempt never gets an answer
    sent = await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    assert "errors" not in sent, sent

    message_id = (await delivery_row(endpoint)).message_id  # type: ignore[union-attr]

    def mine() -> list[dict[str, Any]]:
        return [r for r in receiver.requests if r["headers"].get("webhook-id") == message_id]

    first = _worker_process(store)
    second: subprocess.Popen[bytes] | None = None
    try:

        async def hanging() -> bool:
            assert first.poll() is None, first.stderr.read() if first.stderr else b""
            return len(mine()) == 1

        await eventually(hanging, "the first worker starts the attempt", limit=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)

        second = _worker_process(store)

        async def delivered() -> bool:
            return (await delivery_row(endpoint)).status == "succeeded"  # type: ignore[union-attr]

        await eventually(delivered, "a new worker delivers it", limit=60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert len(mine()) == 2  # the cut-short attempt and the one after the restart
    assert message_id in receiver.seen_ids and receiver.duplicates == 0
    attempts = await WebhookAttempt.filter(delivery__endpoint_id=decode_id(endpoint)).order_by(
        "number"
    )
    assert [a.number for a in attempts] == [1, 2]
    assert attempts[0].status_code is None and "interrupted" in (attempts[0].error or "")
    assert attempts[1].status_code == 200


async def test_send_time_recheck_after_the_allow_list_changes(
    client: httpx.AsyncClient, receiver: Receiver, settings: Settings
) -> None:
    """OUTBOUND_ALLOWED_HOSTS lets a private receiver through; an endpoint saved while
    its address was allowed is refused at send time once the operator narrows the
    allow-list: no request, no response body in the attempt."""
    acct = await register(client)
    endpoint, secret = await create_endpoint(client, acct.token, receiver.url)
    receiver.secrets = [secret]
    url = settings.database_url
    for allowed in (["127.0.0.1/32"], []):
        await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
        delivery = await WebhookDelivery.filter(endpoint_id=decode_id(endpoint)).order_by("-id")
        webhooks_out.use_settings(make_settings(database_url=url, outbound_allowed_hosts=allowed))
        try:
            await webhooks_out.attempt_delivery(delivery[0].id)
        finally:
            webhooks_out.use_settings(settings)
    allowed_attempt, refused_attempt = await WebhookAttempt.filter(
        delivery__endpoint_id=decode_id(endpoint)
    ).order_by("id")
    assert allowed_attempt.status_code == 200 and allowed_attempt.response_body == "ok"
    assert len(receiver.requests) == 1
    assert (refused_attempt.error or "").startswith("refused: 127.0.0.1 is a loopback address")
    assert refused_attempt.status_code is None and refused_attempt.response_body is None


async def test_send_time_recheck_after_dns_changes(
    client: httpx.AsyncClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that resolved to a public address when saved and to a private one when
    sent (DNS rebinding over days, not milliseconds) is refused at send time."""
    from kit import ssrf
    from tests.kit.test_ssrf import FakeDNS

    dns = FakeDNS({"hooks.attacker.example": ["93.184.216.34"]})
    monkeypatch.setattr(ssrf, "system_resolver", lambda: dns)
    acct = await register(client)
    endpoint, _ = await create_endpoint(client, acct.token, "http://hooks.attacker.example/hook")
    dns.table["hooks.attacker.example"] = ["10.1.2.3"]
    await gql(client, TEST, {"i": {"id": endpoint}}, token=acct.token)
    delivery = await delivery_row(endpoint)
    assert delivery is not None
    await webhooks_out.attempt_delivery(delivery.id)
    attempt = await WebhookAttempt.get(delivery_id=delivery.id)
    assert attempt.error == "refused: 10.1.2.3 is a private address"
    assert attempt.status_code is None and attempt.response_body is None
