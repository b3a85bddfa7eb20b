"""Verification codes: sent through the Twilio sandbox, stored hashed, checked in
constant time; expiry, 5 attempts, the resend cooldown, limits per number and per client
address, replay of a used code, two checks racing, hostile input."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from models.messaging import Message, VerificationCode
from resolvers.credentials import SANDBOX_EXTRAS
from schema.relay import decode_id
from tests.conftest import Account, error_codes, eventually, gql, make_settings, register
from tests.conftest import running_server as serve
from tests.messaging.conftest import Gateway, settings_for, unique_number

SEND = """mutation($i: SendVerificationCodeInput!) { sendVerificationCode(input: $i) {
  phone expiresAt message { id body kind channel } } }"""
CHECK = """mutation($i: CheckVerificationCodeInput!) { checkVerificationCode(input: $i) {
  phone verifiedAt } }"""
ME = "query { me { user { phoneVerified } } }"
MESSAGE = "query($id: ID!) { node(id: $id) { ... on Message { status body } } }"


@pytest.fixture
async def codes(store: Any, worker: Any) -> AsyncIterator[Gateway]:
    """The gateway with small limits: cooldown 0 unless a test sets it."""
    from tests.conftest import free_port

    port = free_port()
    overrides = settings_for(
        store.url,
        port,
        verification_resend_cooldown_seconds=0,
        verification_sends_per_number="3/hour",
        verification_sends_per_address="1000/hour",
        verification_checks_per_address="1000/hour",
    )
    settings = make_settings(**overrides)
    app = create_app(settings, configure_logs=False)
    sandbox = app.state.services.sandboxes["twilio"]
    async with serve(app, port) as url:
        await worker(**overrides)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Gateway(client, url, settings, sandbox, app)


async def send(gw: Gateway, owner: Account, phone: str, channel: str = "SMS") -> dict[str, Any]:
    result = await gql(gw.client, SEND, {"i": {"phone": phone, "channel": channel}}, owner.token)
    assert "errors" not in result, result
    return dict(result["data"]["sendVerificationCode"])


async def code_sent_to(gw: Gateway, phone: str, channel: str = "SMS") -> str:
    """The code as the handset would read it: the text of the sandbox's latest message to
    the number (a template's rendered)."""
    to = f"whatsapp:{phone}" if channel == "WHATSAPP" else phone

    async def found() -> str | None:
        bodies = [m["body"] for m in gw.sandbox.messages.values() if m["to"] == to]
        return bodies[-1] if bodies else None

    body = await eventually(found, "the code reaches the sandbox")
    match = re.match(r"^(\d{6}) is your verification code", body)
    assert match, body
    return match.group(1)


async def check(gw: Gateway, owner: Account, phone: str, code: str) -> dict[str, Any]:
    return await gql(gw.client, CHECK, {"i": {"phone": phone, "code": code}}, owner.token)


async def test_a_code_verifies_the_phone_once(codes: Gateway) -> None:
    owner = await register(codes.client)
    phone = unique_number()
    sent = await send(codes, owner, phone)
    assert sent["phone"] == phone and sent["message"]["kind"] == "verification"
    assert sent["message"]["body"] == "[verification code]"  # never shown
    code = await code_sent_to(codes, phone)
    # Stored hashed: neither the code row nor the message keeps it once sent.
    row = await VerificationCode.get(message_id=decode_id(sent["message"]["id"], "Message"))
    assert code not in row.code_hash and len(row.code_hash) == 64
    message = await eventually(
        lambda: Message.filter(id=row.message_id, provider_sid__isnull=False).first(), "sent"
    )
    assert code not in message.body
    wrong = "000000" if code != "000000" else "111111"
    assert error_codes(await check(codes, owner, phone, wrong)) == ["INVALID_VERIFICATION_CODE"]
    me = await gql(codes.client, ME, token=owner.token)
    assert me["data"]["me"]["user"]["phoneVerified"] is False
    ok = await check(codes, owner, phone, f" {code[:3]} {code[3:]} ")
    assert ok["data"]["checkVerificationCode"]["phone"] == phone, ok
    me = await gql(codes.client, ME, token=owner.token)
    assert me["data"]["me"]["user"]["phoneVerified"] is True
    # The same code again: used.
    assert error_codes(await check(codes, owner, phone, code)) == ["INVALID_VERIFICATION_CODE"]


async def test_five_attempts_then_the_right_code_is_refused(codes: Gateway) -> None:
    owner = await register(codes.client)
    phone = unique_number()
    await send(codes, owner, phone)
    code = await code_sent_to(codes, phone)
    wrong = [f"{(int(code) + i) % 10**6:06d}" for i in range(1, 6)]
    for guess in wrong:
        assert error_codes(await check(codes, owner, phone, guess)) == ["INVALID_VERIFICATION_CODE"]
    assert error_codes(await check(codes, owner, phone, code)) == ["INVALID_VERIFICATION_CODE"]
    # A new code starts over.
    await send(codes, owner, phone)
    fresh = await eventually(
        lambda: _new_code(codes, phone, code), "the second code reaches the sandbox"
    )
    assert "errors" not in await check(codes, owner, phone, fresh)


async def _new_code(gw: Gateway, phone: str, old: str) -> str | None:
    latest = await code_sent_to(gw, phone)
    return latest if latest != old else None


async def test_parallel_guesses_cannot_pass_five(codes: Gateway) -> None:
    owner = await register(codes.client)
    phone = unique_number()
    await send(codes, owner, phone)
    code = await code_sent_to(codes, phone)
    guesses = [f"{(int(code) + i) % 10**6:06d}" for i in range(1, 21)]
    results = await asyncio.gather(*(check(codes, owner, phone, g) for g in guesses))
    assert all(error_codes(r) == ["INVALID_VERIFICATION_CODE"] for r in results)
    row = await VerificationCode.filter(phone=phone).order_by("-id").first()
    assert row is not None and row.attempts == 5
    assert error_codes(await check(codes, owner, phone, code)) == ["INVALID_VERIFICATION_CODE"]


async def test_two_checks_of_the_right_code_racing_one_wins(codes: Gateway) -> None:
    owner = await register(codes.client)
    phone = unique_number()
    await send(codes, owner, phone)
    code = await code_sent_to(codes, phone)
    results = await asyncio.gather(*(check(codes, owner, phone, code) for _ in range(6)))
    won = [r for r in results if "errors" not in r]
    assert len(won) == 1, results
    assert all(error_codes(r) == ["INVALID_VERIFICATION_CODE"] for r in results if r not in won)


async def test_an_expired_code_is_refused(codes: Gateway) -> None:
    owner = await register(codes.client)
    phone = unique_number()
    await send(codes, owner, phone)
    code = await code_sent_to(codes, phone)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await VerificationCode.filter(phone=phone).update(expires_at=past)  # ten minutes later
    assert error_codes(await check(codes, owner, phone, code)) == ["INVALID_VERIFICATION_CODE"]


async def test_cooldown_and_limits_per_number_and_per_address(store: Any, codes: Gateway) -> None:
    owner = await register(codes.client)
    phone = unique_number()
    for _ in range(3):
        await send(codes, owner, phone)
    fourth = await gql(codes.client, SEND, {"i": {"phone": phone}}, owner.token)
    assert error_codes(fourth) == ["RATE_LIMITED"], fourth
    # Another organization's member asking for the same number counts against it too.
    other = await register(codes.client)
    assert error_codes(await gql(codes.client, SEND, {"i": {"phone": phone}}, other.token)) == [
        "RATE_LIMITED"
    ]
    # The resend cooldown and the per-address limit, on a gateway configured for them.
    from tests.conftest import free_port

    port = free_port()
    overrides = settings_for(
        store.url,
        port,
        verification_resend_cooldown_seconds=60,
        verification_sends_per_address="2/hour",
        verification_checks_per_address="3/hour",
    )
    app = create_app(make_settings(**overrides), configure_logs=False)
    async with serve(app, port) as url, httpx.AsyncClient(base_url=url) as client:
        again = unique_number()
        first = await gql(client, SEND, {"i": {"phone": again}}, owner.token)
        assert "errors" not in first, first
        soon = await gql(client, SEND, {"i": {"phone": again}}, owner.token)
        assert error_codes(soon) == ["RATE_LIMITED"]
        assert 1 <= soon["errors"][0]["extensions"]["retryAfter"] <= 60
        assert "errors" not in await gql(
            client, SEND, {"i": {"phone": unique_number()}}, owner.token
        )
        third = await gql(client, SEND, {"i": {"phone": unique_number()}}, owner.token)
        assert error_codes(third) == ["RATE_LIMITED"]
        checks = [
            await gql(client, CHECK, {"i": {"phone": again, "code": "123456"}}, owner.token)
            for _ in range(4)
        ]
        assert [error_codes(c) for c in checks] == [["INVALID_VERIFICATION_CODE"]] * 3 + [
            ["RATE_LIMITED"]
        ]


async def test_hostile_input_and_callers(codes: Gateway) -> None:
    owner = await register(codes.client)
    phone = unique_number()
    for bad in ("+1", "x" * 10_000, "+1415\u202e5550100", "whatsapp:+1"):
        result = await gql(codes.client, SEND, {"i": {"phone": bad}}, owner.token)
        assert error_codes(result) == ["INVALID_PHONE_NUMBER"], result
    await send(codes, owner, phone)
    for code in ("1" * 100_000, "12\x0034", "' OR 1=1 --", "", "１２３４５６"):
        result = await check(codes, owner, phone, code)
        assert error_codes(result) in (["INVALID_VERIFICATION_CODE"], ["BAD_USER_INPUT"]), result
    key = await gql(
        codes.client,
        """mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }""",
        {"i": {"name": "k", "role": "MANAGER"}},
        owner.token,
    )
    secret = key["data"]["createApiKey"]["secret"]
    by_key = await gql(codes.client, SEND, {"i": {"phone": phone}}, secret)
    assert error_codes(by_key) == ["BAD_USER_INPUT"], by_key
    anonymous = await gql(codes.client, SEND, {"i": {"phone": phone}})
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]


async def test_a_code_by_whatsapp_goes_as_the_approved_template(codes: Gateway) -> None:
    """WhatsApp takes only templates from a business the person has not written to: the
    code is the account's verification template's variable (never outside the vault)."""
    owner = await register(codes.client)
    phone = unique_number()
    sent = await send(codes, owner, phone, "WHATSAPP")
    assert sent["message"]["channel"] == "WHATSAPP"
    code = await code_sent_to(codes, phone, "WHATSAPP")
    [request] = [m for m in codes.created() if m["To"] == f"whatsapp:{phone}"]
    assert request["ContentSid"] == SANDBOX_EXTRAS["twilio"]["verification_content_sid"]
    assert json.loads(request["ContentVariables"]) == {"1": code} and "Body" not in request
    row = await Message.get(id=decode_id(sent["message"]["id"], "Message"))
    assert code not in json.dumps(row.content_variables) and code not in row.body
    assert "errors" not in await check(codes, owner, phone, code)
