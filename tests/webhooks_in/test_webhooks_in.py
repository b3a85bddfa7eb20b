"""Incoming webhooks over real HTTP, on SQLite and PostgreSQL.

Requests are signed with the `standardwebhooks` package (and, for the generic scheme,
with the standard library's hmac), never with the gateway's own signing code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from kit.settings import Settings
from models.webhooks import WebhookInbox, WebhookSource
from resolvers.jobs import PermanentFailure
from resolvers.webhooks_in import inbox_handler
from tests.conftest import Store, error_codes, eventually, gql, make_settings, register

SYSTEM_STANDARD = "whsec_" + "c3lzdGVtLWxldmVsLXN0YW5kYXJkLXNlY3JldC0zMmI="
SYSTEM_GENERIC = "generic-system-secret-for-tests"

PROCESSED: dict[str, list[int]] = {}


@inbox_handler("standard", "test_order.*")
async def record_order(event: WebhookInbox, connection: Any) -> None:
    PROCESSED.setdefault(event.event_id, []).append(event.id)


@inbox_handler("standard", "test_order.explodes")
async def explode(event: WebhookInbox, connection: Any) -> None:
    PROCESSED.setdefault(event.event_id, []).append(event.id)
    raise PermanentFailure("the handler is broken")


@pytest.fixture
def settings(store: Store) -> Settings:
    return make_settings(
        database_url=store.url,
        webhook_system_secrets={"standard": SYSTEM_STANDARD, "generic": SYSTEM_GENERIC},
        webhook_max_body_bytes=4096,
    )


def standard_request(
    secret: str,
    payload: dict[str, Any],
    *,
    msg_id: str | None = None,
    at: dt.datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers signed by the standardwebhooks package."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or dt.datetime.now(dt.UTC)
    body = json.dumps(payload)
    signature = Webhook(secret).sign(msg_id, at, body)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body.encode(), headers


async def post(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(path, content=body, headers=headers)


async def inbox_count(**filters: Any) -> int:
    return await WebhookInbox.filter(**filters).count()


# System-level secret -------------------------------------------------------------------


async def test_standard_webhook_stored_before_2xx(client: httpx.AsyncClient) -> None:
    body, headers = standard_request(SYSTEM_STANDARD, {"type": "test_misc.created", "n": 1})
    response = await post(client, "/webhooks/standard", body, headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "received": True,
        "eventId": headers["webhook-id"],
        "duplicate": False,
    }
    row = await WebhookInbox.get(event_id=headers["webhook-id"])
    assert row.provider == "standard" and row.tenant_id is None
    assert row.event_type == "test_misc.created" and row.payload["n"] == 1
    assert row.status == "received"
    assert row.headers["webhook-id"] == headers["webhook-id"]


@pytest.mark.parametrize(
    "tamper",
    ["forged", "stale", "future", "other_body", "other_id", "no_comma", "junk", "missing"],
)
async def test_bad_signatures_are_401_and_store_nothing(
    client: httpx.AsyncClient, tamper: str
) -> None:
    payload = {"type": "test_order.paid", "amount": 10}
    at = None
    if tamper == "stale":
        at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    if tamper == "future":
        at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
    secret = SYSTEM_STANDARD
    if tamper == "forged":
        secret = "whsec_" + "Zm9yZ2VkLXNlY3JldC1vZi1hbi1hdHRhY2tlci0zMmI="
    body, headers = standard_request(secret, payload, at=at)
    if tamper == "other_body":  # a captured signature replayed on another body
        body = json.dumps({"type": "test_order.paid", "amount": 1_000_000}).encode()
    if tamper == "other_id":  # ... or under another message id
        headers["webhook-id"] = f"msg_{uuid.uuid4().hex}"
    if tamper == "no_comma":  # the standardwebhooks package raises ValueError for this
        headers["webhook-signature"] = "v1" + headers["webhook-signature"].split(",", 1)[1]
    if tamper == "junk":
        headers["webhook-signature"] = "v1,@@@ v2,abc ,,, v1,"
        headers["webhook-timestamp"] = "not-a-number"
    if tamper == "missing":
        del headers["webhook-signature"]
    response = await post(client, "/webhooks/standard", body, headers)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "WEBHOOK_SIGNATURE_INVALID"
    assert error["reason"]
    assert error["requestId"] == response.headers["x-request-id"]
    assert await inbox_count(event_id=headers["webhook-id"]) == 0


async def test_exact_replay_within_the_window_is_a_duplicate_processed_once(
    client: httpx.AsyncClient, worker: Any
) -> None:
    body, headers = standard_request(SYSTEM_STANDARD, {"type": "test_order.paid", "amount": 5})
    first = await post(client, "/webhooks/standard", body, headers)
    second = await post(client, "/webhooks/standard", body, headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["duplicate"] is False
    assert second.json()["duplicate"] is True
    assert await inbox_count(event_id=headers["webhook-id"]) == 1

    await worker()

    async def processed() -> bool:
        row = await WebhookInbox.get(event_id=headers["webhook-id"])
        return row.status == "processed"

    await eventually(processed, "the event is processed")
    third = await post(client, "/webhooks/standard", body, headers)  # after processing too
    assert third.json()["duplicate"] is True
    await asyncio.sleep(0.3)  # give a wrongly queued second job the chance to run
    assert len(PROCESSED[headers["webhook-id"]]) == 1


async def test_unknown_types_are_stored_and_ignored(client: httpx.AsyncClient, worker: Any) -> None:
    body, headers = standard_request(SYSTEM_STANDARD, {"type": "nobody.handles_this"})
    assert (await post(client, "/webhooks/standard", body, headers)).status_code == 200
    await worker()

    async def ignored() -> bool:
        return (await WebhookInbox.get(event_id=headers["webhook-id"])).status == "ignored"

    await eventually(ignored, "the event is marked ignored")


async def test_unknown_provider_address_and_size(client: httpx.AsyncClient) -> None:
    body, headers = standard_request(SYSTEM_STANDARD, {"type": "test_order.paid"})
    unknown = await post(client, "/webhooks/nonesuch", body, headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    token = await post(client, "/webhooks/standard/whk_doesnotexist", body, headers)
    assert token.status_code == 404
    big, big_headers = standard_request(SYSTEM_STANDARD, {"type": "x.y", "pad": "a" * 5000})
    too_big = await post(client, "/webhooks/standard", big, big_headers)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert await inbox_count(event_id=big_headers["webhook-id"]) == 0
    get = await client.get("/webhooks/standard")
    assert get.status_code == 405


async def test_authentic_but_not_json_is_400(client: httpx.AsyncClient) -> None:
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.UTC)
    raw = "this is not json"
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SYSTEM_STANDARD).sign(msg_id, now, raw),
    }
    response = await post(client, "/webhooks/standard", raw.encode(), headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "WEBHOOK_PAYLOAD_INVALID"
    assert await inbox_count(event_id=msg_id) == 0


# Generic HMAC-SHA256 -------------------------------------------------------------------


def generic_headers(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    message = body if ts is None else f"{ts}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    headers = {"x-signature": f"sha256={digest}", "content-type": "application/json"}
    if ts is not None:
        headers["x-webhook-timestamp"] = str(ts)
    return headers


async def test_generic_hmac(client: httpx.AsyncClient) -> None:
    event_id = f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"id": event_id, "type": "thing.happened"}).encode()
    ok = await post(client, "/webhooks/generic", body, generic_headers(SYSTEM_GENERIC, body))
    assert ok.status_code == 200 and ok.json()["eventId"] == event_id

    stamped_id = f"evt_{uuid.uuid4().hex}"
    stamped = json.dumps({"id": stamped_id, "type": "thing.happened"}).encode()
    now = int(time.time())
    fresh = await post(
        client, "/webhooks/generic", stamped, generic_headers(SYSTEM_GENERIC, stamped, now)
    )
    assert fresh.status_code == 200

    stale_id = f"evt_{uuid.uuid4().hex}"
    stale_body = json.dumps({"id": stale_id}).encode()
    stale = await post(
        client,
        "/webhooks/generic",
        stale_body,
        generic_headers(SYSTEM_GENERIC, stale_body, now - 3600),
    )
    assert stale.status_code == 401
    assert stale.json()["error"]["reason"] == "STALE_TIMESTAMP"

    # the timestamp is signed: moving it forward breaks the signature
    moved = generic_headers(SYSTEM_GENERIC, stale_body, now - 3600)
    moved["x-webhook-timestamp"] = str(now)
    assert (await post(client, "/webhooks/generic", stale_body, moved)).status_code == 401

    forged_id = f"evt_{uuid.uuid4().hex}"
    forged_body = json.dumps({"id": forged_id}).encode()
    forged = await post(
        client, "/webhooks/generic", forged_body, generic_headers("wrong-secret", forged_body)
    )
    assert forged.status_code == 401
    assert await inbox_count(event_id__in=[stale_id, forged_id]) == 0


# Tenant sources and the GraphQL inbox ----------------------------------------------------

CREATE_SOURCE = """
mutation($i: CreateWebhookSourceInput!) {
  createWebhookSource(input: $i) { url secret source { id provider tokenPrefix } }
}"""
INBOX = """
query($p: String, $s: WebhookInboxStatus, $first: Int, $after: String) {
  webhookInbox(provider: $p, status: $s, first: $first, after: $after) {
    edges { node { id eventId eventType status payload attempts error } }
    pageInfo { hasNextPage endCursor }
  }
}"""
REPLAY = """mutation($i: ReplayWebhookEventInput!) {
  replayWebhookEvent(input: $i) { event { id status } } }"""


async def test_tenant_source_inbox_and_replay(client: httpx.AsyncClient, worker: Any) -> None:
    acct = await register(client)
    created = await gql(client, CREATE_SOURCE, {"i": {"provider": "standard"}}, token=acct.token)
    data = created["data"]["createWebhookSource"]
    secret, path = data["secret"], httpx.URL(data["url"]).path
    assert secret.startswith("whsec_")
    token = path.rsplit("/", 1)[1]
    stored = await WebhookSource.get(token_prefix=token[:12])
    assert token not in stored.token_hash and secret not in stored.secret_encrypted

    # the system secret does not open a tenant's address, and vice versa
    body, headers = standard_request(SYSTEM_STANDARD, {"type": "test_order.paid"})
    assert (await post(client, path, body, headers)).status_code == 401
    body, headers = standard_request(secret, {"type": "test_order.paid"})
    assert (await post(client, "/webhooks/standard", body, headers)).status_code == 401
    assert await inbox_count(event_id=headers["webhook-id"]) == 0

    ids = []
    for kind in ("test_order.paid", "test_order.explodes", "other.thing"):
        body, headers = standard_request(secret, {"type": kind, "total": 3})
        response = await post(client, path, body, headers)
        assert response.status_code == 200
        ids.append(headers["webhook-id"])

    # the same event id under the system address is a different event (another source)
    body, headers = standard_request(SYSTEM_STANDARD, {"type": "x.y"}, msg_id=ids[0])
    assert (await post(client, "/webhooks/standard", body, headers)).json()["duplicate"] is False

    page = await gql(client, INBOX, {"p": "standard"}, token=acct.token)
    nodes = [e["node"] for e in page["data"]["webhookInbox"]["edges"]]
    assert [n["eventId"] for n in nodes] == list(reversed(ids))
    assert {n["status"] for n in nodes} == {"RECEIVED"}
    assert nodes[-1]["payload"] == {"type": "test_order.paid", "total": 3}

    await worker()

    async def settled() -> bool:
        rows = await WebhookInbox.filter(event_id__in=ids, tenant_id__not_isnull=True)
        return all(r.status != "received" for r in rows) and len(rows) == 3

    await eventually(settled, "all three events processed", limit=60)
    by_id = {
        n["eventId"]: n
        for n in [
            e["node"]
            for e in (await gql(client, INBOX, {}, token=acct.token))["data"]["webhookInbox"][
                "edges"
            ]
        ]
    }
    assert by_id[ids[0]]["status"] == "PROCESSED"
    assert by_id[ids[1]]["status"] == "FAILED" and "broken" in by_id[ids[1]]["error"]
    assert by_id[ids[1]]["attempts"] == 1
    assert by_id[ids[2]]["status"] == "IGNORED"

    failed = await gql(client, INBOX, {"s": "FAILED"}, token=acct.token)
    assert [e["node"]["eventId"] for e in failed["data"]["webhookInbox"]["edges"]] == [ids[1]]

    # replay re-processes a processed event once more
    before = len(PROCESSED[ids[0]])
    replay = await gql(client, REPLAY, {"i": {"id": by_id[ids[0]]["id"]}}, token=acct.token)
    assert replay["data"]["replayWebhookEvent"]["event"]["status"] == "RECEIVED"

    async def reprocessed() -> bool:
        return len(PROCESSED[ids[0]]) == before + 1

    await eventually(reprocessed, "the replayed event is processed again")

    # another organization sees none of it and cannot replay it
    other = await register(client)
    theirs = await gql(client, INBOX, {}, token=other.token)
    assert theirs["data"]["webhookInbox"]["edges"] == []
    denied = await gql(client, REPLAY, {"i": {"id": by_id[ids[0]]["id"]}}, token=other.token)
    assert error_codes(denied) == ["NOT_FOUND"]


async def test_source_input_errors(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    bad = await gql(client, CREATE_SOURCE, {"i": {"provider": "nonesuch"}}, token=acct.token)
    assert error_codes(bad) == ["BAD_USER_INPUT"]
    assert "provider" in bad["errors"][0]["extensions"]["details"]
    bad = await gql(
        client,
        CREATE_SOURCE,
        {"i": {"provider": "standard", "secret": "whsec_***not base64***"}},
        token=acct.token,
    )
    assert error_codes(bad) == ["BAD_USER_INPUT"]
    given = await gql(
        client,
        CREATE_SOURCE,
        {"i": {"provider": "generic", "secret": "a-vendor-given-secret"}},
        token=acct.token,
    )
    data = given["data"]["createWebhookSource"]
    assert data["secret"] is None
    path = httpx.URL(data["url"]).path
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "a.b"}).encode()
    ok = await post(client, path, body, generic_headers("a-vendor-given-secret", body))
    assert ok.status_code == 200
    anonymous = await gql(client, INBOX, {})
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]


# Hardening (issue 9) ----------------------------------------------------------------------


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_generic_accepts_the_documented_signature_forms(client: httpx.AsyncClient) -> None:
    """`X-Signature: sha256=<hex>`, bare hex in `X-Signature`, `X-Webhook-Signature: <hex>`,
    each an HMAC-SHA256 of the raw body with the source's secret, as vendors compute it."""
    forms = {
        "prefixed": lambda d: {"X-Signature": f"sha256={d}"},
        "bare": lambda d: {"X-Signature": d},
        "webhook-signature": lambda d: {"X-Webhook-Signature": d},
        "upper-case hex": lambda d: {"X-Webhook-Signature": d.upper()},
    }
    for name, headers in forms.items():
        body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": name}).encode()
        ok = await post(client, "/webhooks/generic", body, headers(hex_hmac(SYSTEM_GENERIC, body)))
        assert ok.status_code == 200, (name, ok.text)
        wrong = headers(hex_hmac("another-secret", body))
        assert (await post(client, "/webhooks/generic", body, wrong)).status_code == 401, name
    body = b'{"id": "evt_md5"}'
    other_algo = {"X-Signature": "md5=" + hex_hmac(SYSTEM_GENERIC, body)}
    assert (await post(client, "/webhooks/generic", body, other_algo)).status_code == 401


async def test_unsigned_headers_never_override_the_signed_body(client: httpx.AsyncClient) -> None:
    """One signed body sent three times with different unsigned X-Event-Id / X-Event-Type
    headers is one event, with the signed type."""
    event_id = f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"id": event_id, "type": "invoice.paid"}).encode()
    signature = {"X-Signature": "sha256=" + hex_hmac(SYSTEM_GENERIC, body)}
    answers = []
    for extra in (
        {},
        {"X-Event-Id": "evt_forged_1"},
        {"X-Event-Id": "evt_forged_2", "X-Event-Type": "refund.issued"},
    ):
        response = await post(client, "/webhooks/generic", body, {**signature, **extra})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert [a["eventId"] for a in answers] == [event_id] * 3
    assert [a["duplicate"] for a in answers] == [False, True, True]
    rows = await WebhookInbox.filter(provider="generic", event_id__startswith="evt_")
    mine = [r for r in rows if r.event_id in (event_id, "evt_forged_1", "evt_forged_2")]
    assert [(r.event_id, r.event_type) for r in mine] == [(event_id, "invoice.paid")]

    # Without an id in the body, the body's hash is the id: a re-send is a duplicate.
    plain = b'{"type": "ping"}'
    signature = {"X-Signature": "sha256=" + hex_hmac(SYSTEM_GENERIC, plain)}
    first = await post(client, "/webhooks/generic", plain, {**signature, "X-Event-Id": "a"})
    again = await post(client, "/webhooks/generic", plain, {**signature, "X-Event-Id": "b"})
    assert first.json()["eventId"] == again.json()["eventId"]
    assert first.json()["eventId"].startswith("sha256:") and again.json()["duplicate"] is True


async def test_hostile_json_in_signed_bodies_is_stored_or_refused_never_500(
    client: httpx.AsyncClient,
) -> None:
    """NUL characters and lone surrogates (JSON escapes PostgreSQL's jsonb refuses) are
    stored as U+FFFD; nesting beyond the limit, or deep enough to exhaust the parser's
    recursion, and NaN/huge numbers are a coded 400; nothing is stored half."""
    event_id = f"evt_{uuid.uuid4().hex}"
    hostile = r', "text": "a\u0000b", "lone": "x\ud800y", "\u0000key": ["\udfff",'
    raw = (
        '{"id": "' + event_id + '", "type": "note"' + hostile + r' {"ok": "\ud83d\ude00"}]}'
    ).encode()
    response = await post(client, "/webhooks/generic", raw, generic_headers(SYSTEM_GENERIC, raw))
    assert response.status_code == 200, response.text
    row = await WebhookInbox.get(event_id=event_id)
    assert row.payload["text"] == "a\ufffdb" and row.payload["lone"] == "x\ufffdy"
    assert row.payload["\ufffdkey"] == ["\ufffd", {"ok": "\U0001f600"}]

    too_deep = b'{"id": "evt_deep", "a": ' + b"[" * 70 + b"]" * 70 + b"}"
    very_deep = b"[" * 2000 + b"]" * 2000  # RecursionError in the parser
    nan = b'{"id": "evt_nan", "amount": NaN}'
    huge = b'{"id": "evt_huge", "amount": 1e400}'
    for body in (too_deep, very_deep, nan, huge):
        refused = await post(
            client, "/webhooks/generic", body, generic_headers(SYSTEM_GENERIC, body)
        )
        assert refused.status_code == 400, (body[:30], refused.text)
        assert refused.json()["error"]["code"] == "WEBHOOK_PAYLOAD_INVALID"
    assert await inbox_count(event_id__in=["evt_deep", "evt_nan", "evt_huge"]) == 0


async def test_source_token_never_in_a_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    acct = await register(client)
    created = await gql(client, CREATE_SOURCE, {"i": {"provider": "generic"}}, token=acct.token)
    data = created["data"]["createWebhookSource"]
    path = httpx.URL(data["url"]).path
    token = path.rsplit("/", 1)[1]
    body = b'{"id": "evt_logged", "type": "ping"}'
    with caplog.at_level("DEBUG"):
        ok = await post(client, path, body, generic_headers(data["secret"], body))
        bad = await post(client, path, body, generic_headers("wrong-secret", body))
        junk = await post(client, path + "x", body, {})
    assert (ok.status_code, bad.status_code, junk.status_code) == (200, 401, 404)
    # every record but the test's own HTTP client's (which knows the URL it calls)
    lines = [r.getMessage() + " " + str(r.__dict__) for r in caplog.records if r.name != "httpx"]
    assert any("/webhooks/generic/{token}" in line for line in lines)
    assert not [line for line in lines if token in line]


async def test_junk_to_unknown_addresses_never_throttles_a_real_source(
    store: Store, client: httpx.AsyncClient
) -> None:
    """Another tenant's signed event goes through while junk floods made-up tokens of the
    same provider (the budget used to be one per provider, counted before the source)."""
    from tests.factories import app_with, client_for

    app = app_with(
        make_settings(database_url=store.url),
        rate_limit_webhooks="3/hour",
        rate_limit_anonymous="2/hour",
    )
    acct = await register(client)
    created = await gql(client, CREATE_SOURCE, {"i": {"provider": "generic"}}, token=acct.token)
    data = created["data"]["createWebhookSource"]
    path = httpx.URL(data["url"]).path
    async with client_for(app, "203.0.113.9") as attacker, client_for(app, "192.0.2.1") as vendor:
        statuses = [
            (await attacker.post(f"/webhooks/generic/whk_{i}", content=b"{}")).status_code
            for i in range(6)
        ]
        assert statuses == [404, 404, 429, 429, 429, 429]
        for i in range(3):
            body = json.dumps({"id": f"evt_real_{uuid.uuid4().hex}", "n": i}).encode()
            response = await post(vendor, path, body, generic_headers(data["secret"], body))
            assert response.status_code == 200, response.text
        body = b'{"id": "evt_over"}'
        over = await post(vendor, path, body, generic_headers(data["secret"], body))
        assert over.status_code == 429  # the source's own budget, counted per source
