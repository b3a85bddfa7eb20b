"""sendBulkSms: 1,000 recipients with 10 invalid numbers → 990 sent, 10 coded failures;
duplicates, opted-out numbers and variables; a send whose worker died during the call is
looked up at Twilio and never sent twice — also with a real worker process killed in the
middle of a bulk send."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.messaging import Channel, Message, MessageStatus
from providers import twilio
from providers.http import ProviderConfig, ProviderHTTP
from providers.sandbox.twilio import TwilioSandbox
from resolvers import messaging
from resolvers.jobs import enqueue
from schema.relay import decode_id
from tests.conftest import Store, eventually, gql, register, running_server
from tests.messaging.conftest import SANDBOX_ACCOUNT, Gateway, opt_outs, unique_number
from tests.processes import process_env, start_worker

BULK = """mutation($i: SendBulkSmsInput!) { sendBulkSms(input: $i) {
  batch { id total queued }
  results { to status code error message { id body } } } }"""
ADD_OPT_OUT = (
    """mutation($i: AddPhoneOptOutInput!) { addPhoneOptOut(input: $i) { optOut { id } } }"""
)


def numbers(count: int) -> list[str]:
    found: set[str] = set()
    while len(found) < count:
        found.add(unique_number())
    return sorted(found)


async def batch_done(batch_id: int, total: int) -> bool:
    pending = await Message.filter(
        batch_id=batch_id, status__in=[MessageStatus.QUEUED.value, MessageStatus.SENDING.value]
    ).count()
    return pending == 0 and await Message.filter(batch_id=batch_id).count() == total


async def test_a_thousand_with_ten_invalid(gateway: Gateway) -> None:
    gateway.sandbox.configure(callbacks=None, inbound=None)  # the sends are what is counted
    owner = await register(gateway.client)
    good = numbers(990)
    bad = ["+1415", "abc", "+999 123", "12", "+1 (415) 55", "+0 000 000", "+44 1", "x@y.z",
           "+1234567890123456", "555-0100"]  # fmt: skip
    recipients = [{"to": n} for n in good[:500]] + [{"to": b} for b in bad]
    recipients += [{"to": n} for n in good[500:]]
    result = await gql(
        gateway.client,
        BULK,
        {"i": {"body": "Hi {{name}}", "variables": {"name": "there"}, "recipients": recipients}},
        owner.token,
    )
    assert "errors" not in result, result
    done = result["data"]["sendBulkSms"]
    assert (done["batch"]["total"], done["batch"]["queued"]) == (1000, 990)
    statuses = Counter(r["status"] for r in done["results"])
    assert statuses == {"QUEUED": 990, "INVALID": 10}
    invalid = [r for r in done["results"] if r["status"] == "INVALID"]
    assert [r["to"] for r in invalid] == bad  # in the order given
    assert {r["code"] for r in invalid} == {"INVALID_PHONE_NUMBER"}
    batch_id = decode_id(done["batch"]["id"], "SmsBatch")
    await eventually(lambda: batch_done(batch_id, 990), "the batch is sent", limit=120)
    rows = await Message.filter(batch_id=batch_id)
    assert Counter(r.status for r in rows) == {"ACCEPTED": 990}
    sent = [m["To"] for m in gateway.created()]
    mine = [n for n in sent if n in set(good)]
    assert sorted(mine) == good  # each number exactly once
    assert {m["Body"] for m in gateway.created() if m["To"] in set(good)} == {"Hi there"}


async def test_duplicates_opted_out_and_variables(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    ada, bob, gone = numbers(3)
    assert "errors" not in await gql(
        gateway.client, ADD_OPT_OUT, {"i": {"number": gone}}, owner.token
    )
    recipients = [
        {"to": ada, "variables": {"name": "Ada"}},
        {"to": bob, "variables": {"name": "Bob", "code": "B2"}},
        {"to": ada.replace("+1", "001 "), "variables": {"name": "Ada again"}},
        {"to": gone, "variables": {"name": "Gone"}},
        {"to": unique_number()},  # no value for {{name}}
        {"to": unique_number(), "variables": {"name": {"nested": True}}},
        {"to": unique_number(), "variables": {"name": "x" * 2000}},
    ]
    result = await gql(
        gateway.client,
        BULK,
        {"i": {"body": "Hi {{name}}, code {{ code }}", "variables": {"code": "A1"},
               "recipients": recipients}},
        owner.token,
    )  # fmt: skip
    assert "errors" not in result, result
    results = result["data"]["sendBulkSms"]["results"]
    assert [r["status"] for r in results] == [
        "QUEUED", "QUEUED", "DUPLICATE", "OPTED_OUT", "INVALID", "INVALID", "INVALID",
    ]  # fmt: skip
    assert results[0]["message"]["body"] == "Hi Ada, code A1"
    assert results[1]["message"]["body"] == "Hi Bob, code B2"
    assert results[3]["code"] == "PHONE_OPTED_OUT"
    assert {r["code"] for r in results[4:]} == {"BAD_USER_INPUT"}
    assert await opt_outs(gateway, owner) == {gone: "MANUAL"}
    too_many = [{"to": unique_number()} for _ in range(1001)]
    refused = await gql(gateway.client, BULK, {"i": {"body": "x", "recipients": too_many}},
                        owner.token)  # fmt: skip
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_send_that_reached_twilio_before_a_crash_is_not_sent_again(
    gateway: Gateway,
) -> None:
    """The state a worker killed during the call leaves: the message SENDING after one
    claim, and Twilio holding it (or not). The next try asks Twilio first."""
    gateway.sandbox.configure(callbacks=None, inbound=None)
    owner = await register(gateway.client)
    tenant_id = int(decode_id(owner.org_id, "Organization"))
    went, lost = unique_number(), unique_number()
    claimed_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # before the call
    client = twilio.TwilioClient(
        ProviderHTTP(ProviderConfig(name="twilio-test")),
        twilio.TwilioCredential(SANDBOX_ACCOUNT, gateway.token),
        base_url=f"{gateway.url}/sandbox/twilio",
    )
    try:
        earlier = await client.send_message(to=went, sender="+15005550006", body="Crash test")
    finally:
        await client.http.aclose()
    # What the killed worker had committed before its call (the claim), and its job.
    rows = [
        await Message.create(
            tenant_id=tenant_id, channel=Channel.SMS.value, kind="direct", recipient=number,
            body="Crash test", status=MessageStatus.SENDING.value, attempts=1,
            claimed_at=claimed_at,
        )
        for number in (went, lost)
    ]  # fmt: skip
    for row in rows:
        await enqueue(messaging.SEND_JOB, {"message_id": row.id}, tenant_id=tenant_id)
    await eventually(lambda: _all_recorded([r.id for r in rows]), "both are recorded")
    sent_to = [m["To"] for m in gateway.created()]
    assert sent_to.count(went) == 1  # the look-up found it: not sent again
    assert sent_to.count(lost) == 1  # Twilio never had it: sent now
    first = await Message.get(id=rows[0].id)
    assert first.provider_sid == earlier.sid and first.attempts == 2
    assert first.status == "DELIVERED"  # as Twilio reported it on the look-up


async def _all_recorded(ids: list[int]) -> bool:
    """Each of `ids` is at Twilio: ACCEPTED, or further when Twilio had it delivered."""
    done = [MessageStatus.ACCEPTED.value, MessageStatus.DELIVERED.value]
    return await Message.filter(id__in=ids, status__in=done).count() == len(ids)


async def test_a_worker_killed_during_a_bulk_send_sends_each_number_once(
    store: Store, worker: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    if store.kind != "postgres":
        pytest.skip("a worker process beside the test needs PostgreSQL (SQLite is one process)")
    sandbox = TwilioSandbox()
    account = "AC" + uuid.uuid4().hex
    token = "crash-test-auth-token"
    async with running_server(sandbox) as sandbox_url:
        twilio_settings = {
            "sandbox_enabled": False,
            "twilio_account_sid": account,
            "twilio_auth_token": token,
            "twilio_phone_number": "+15005550006",
            "twilio_base_url": sandbox_url,
            "job_lease_seconds": 1,
            "job_poll_seconds": 0.05,
        }
        owner = await register(client)
        wanted = numbers(200)
        result = await gql(
            client, BULK, {"i": {"body": "Crash", "recipients": [{"to": n} for n in wanted]}},
            owner.token,
        )  # fmt: skip
        assert "errors" not in result, result
        batch_id = decode_id(result["data"]["sendBulkSms"]["batch"]["id"], "SmsBatch")
        env = process_env(
            store.url, outbound_rate_limits='{"twilio": "40/second"}', **twilio_settings
        )
        first = start_worker(env, tmp_path / "w1.log")
        try:
            await eventually(lambda: _created_at_least(sandbox, 40), "the bulk send is going")
        finally:
            first.kill()
        assert len(_created(sandbox)) < 200, "the worker finished before it was killed"
        await worker(outbound_rate_limits={"twilio": "10000/second"}, **twilio_settings)
        await eventually(lambda: batch_done(batch_id, 200), "the batch is sent", limit=120)
        sent = Counter(_created(sandbox))
        assert sorted(sent) == wanted and set(sent.values()) == {1}, sent.most_common(3)
        statuses = Counter(await Message.filter(batch_id=batch_id).values_list("status", flat=True))
        # ACCEPTED as sent; DELIVERED when the message caught in the kill was found at
        # Twilio by the look-up (which reports the status Twilio has by then).
        assert set(statuses) <= {"ACCEPTED", "DELIVERED"} and sum(statuses.values()) == 200


def _created(sandbox: TwilioSandbox) -> list[str]:
    return [m["to"] for m in sandbox.messages.values()]


async def _created_at_least(sandbox: TwilioSandbox, count: int) -> bool:
    return len(sandbox.messages) >= count
