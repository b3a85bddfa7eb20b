"""SMS end to end: the gateway's Twilio sandbox takes the message and posts its signed
status callbacks back to the gateway (verified against the public URL with the auth
token); statuses move forward only; Twilio's refusals are coded; STOP and START replies
keep the opt-out list; callbacks forged, re-targeted, replayed or out of order."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from models.messaging import Message
from models.webhooks import WebhookInbox
from schema.relay import decode_id
from tests.conftest import error_codes, eventually, gql, register
from tests.credentials.test_credentials import member_token
from tests.messaging.conftest import (
    MESSAGE,
    SEND_SMS,
    Gateway,
    opt_outs,
    send_sms,
    sign,
    status_is,
    subscribe_status,
    unique_number,
)


async def test_an_sms_is_delivered_and_the_subscription_sees_it(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    number = unique_number()
    gid = await send_sms(gateway, owner, number, "Your order shipped")
    seen = await subscribe_status(gateway, owner, gid, {"DELIVERED"})
    assert seen[-1] == "DELIVERED", seen
    order = ["QUEUED", "SENDING", "ACCEPTED", "SENT", "DELIVERED"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    node = await eventually(status_is(gateway, owner, gid, "DELIVERED"), "delivered")
    assert node["provider"] == "twilio-sandbox" and node["providerSid"].startswith("SM")
    assert node["segments"] == 1 and node["attempts"] == 1
    [sent] = [m for m in gateway.created() if m["To"] == number]
    assert sent["Body"] == "Your order shipped" and sent["From"] == "+15005550006"
    assert sent["StatusCallback"] == f"{gateway.url}/webhooks/twilio"
    # Every callback the sandbox posted carries a signature Twilio's own library accepts.
    posted = [d for d in gateway.sandbox.callbacks.recorded() if d["status"] == 200]
    assert posted
    validator = RequestValidator(gateway.token)
    for delivery in posted:
        params = dict(_form(delivery["body"]))
        assert validator.validate(
            delivery["url"], params, delivery["headers"]["x-twilio-signature"]
        ), delivery


def _form(body: Any) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body if isinstance(body, str) else "", keep_blank_values=True)


async def test_twilio_refusals_are_coded(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    invalid = await send_sms(gateway, owner, "+15005550001")  # Twilio: 21211
    undelivered = await send_sms(gateway, owner, "+15005550010")  # the carrier: 30003
    failed = await send_sms(gateway, owner, "+15005550011")  # 30008
    node = await eventually(status_is(gateway, owner, invalid, "FAILED"), "refused")
    assert node["errorCode"] == "21211" and "not a valid phone number" in node["lastError"]
    assert node["providerSid"] is None and node["attempts"] == 1
    node = await eventually(status_is(gateway, owner, undelivered, "UNDELIVERED"), "undeliv.")
    assert node["errorCode"] == "30003"
    node = await eventually(status_is(gateway, owner, failed, "FAILED"), "failed")
    assert node["errorCode"] == "30008"
    assert await opt_outs(gateway, owner) == {}


async def test_bad_numbers_and_bodies_are_refused_naming_the_field(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    before = await Message.all().count()
    cases = {
        "12345": "INVALID_PHONE_NUMBER",
        "+1 415 555": "INVALID_PHONE_NUMBER",
        "+44 7700 900": "INVALID_PHONE_NUMBER",
        "+1415\x00555 0100": "BAD_USER_INPUT",  # NUL refused at the GraphQL door
        "9" * 5000: "INVALID_PHONE_NUMBER",
        "not a number": "INVALID_PHONE_NUMBER",
        "": "INVALID_PHONE_NUMBER",
    }
    for number, code in cases.items():
        result = await gql(
            gateway.client, SEND_SMS, {"i": {"to": number, "body": "x"}}, owner.token
        )
        assert error_codes(result) == [code], (number[:20], result)
        if code == "INVALID_PHONE_NUMBER":
            assert "to" in result["errors"][0]["extensions"]["details"]
    good = unique_number()
    for body, problem in (("", "body"), ("x" * 1601, "body"), ("   ", "body")):
        result = await gql(gateway.client, SEND_SMS, {"i": {"to": good, "body": body}}, owner.token)
        assert error_codes(result) == ["BAD_USER_INPUT"], result
        assert problem in result["errors"][0]["extensions"]["details"]
    assert await Message.all().count() == before
    # Written any way a person types it, a number is stored in E.164.
    result = await gql(
        gateway.client, SEND_SMS, {"i": {"to": "00 1 (415) 555-0123", "body": "hi"}}, owner.token
    )
    assert result["data"]["sendSms"]["message"]["recipient"] == "+14155550123"


async def test_stop_blocks_the_next_send_and_start_lifts_it(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    number = unique_number()
    gid = await send_sms(gateway, owner, number)
    await eventually(status_is(gateway, owner, gid, "DELIVERED"), "delivered")
    await gateway.inbound(number, "  stop ")
    listed = await eventually(lambda: _listed(gateway, owner, number), "the STOP is filed")
    assert listed == "KEYWORD"
    refused = await gql(gateway.client, SEND_SMS, {"i": {"to": number, "body": "x"}}, owner.token)
    assert error_codes(refused) == ["PHONE_OPTED_OUT"], refused
    assert refused["errors"][0]["extensions"]["details"] == {"to": "opted out (replied STOP)"}
    # Another organization's list is its own.
    other = await register(gateway.client)
    assert await opt_outs(gateway, other) == {}
    await gateway.inbound(number, "START")
    await eventually(lambda: _unlisted(gateway, owner, number), "the START is filed")
    again = await send_sms(gateway, owner, number)
    await eventually(status_is(gateway, owner, again, "DELIVERED"), "delivered again")


async def _listed(gw: Gateway, owner: Any, number: str) -> str | None:
    return (await opt_outs(gw, owner)).get(number)


async def _unlisted(gw: Gateway, owner: Any, number: str) -> bool:
    return number not in await opt_outs(gw, owner)


async def test_twilios_21610_fails_the_message_and_lists_the_number(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    gid = await send_sms(gateway, owner, "+15005550004")  # unsubscribed at Twilio
    node = await eventually(status_is(gateway, owner, gid, "FAILED"), "refused")
    assert node["errorCode"] == "21610"
    assert (await opt_outs(gateway, owner)) == {"+15005550004": "PROVIDER"}
    refused = await gql(
        gateway.client, SEND_SMS, {"i": {"to": "+15005550004", "body": "x"}}, owner.token
    )
    assert error_codes(refused) == ["PHONE_OPTED_OUT"]


async def test_callbacks_forged_retargeted_or_replayed(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    gid = await send_sms(gateway, owner, unique_number())
    node = await eventually(status_is(gateway, owner, gid, "DELIVERED"), "delivered")
    sid = node["providerSid"]
    url = f"{gateway.url}/webhooks/twilio"
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "failed", "ErrorCode": "30008",
              "AccountSid": "AC" + "5a" * 16, "To": "+14155550100"}  # fmt: skip
    body = urlencode(params)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    before = await WebhookInbox.filter(provider="twilio").count()
    for signature in (
        sign("not-the-token", url, params),  # forged: another key
        sign(gateway.token, "https://evil.example/webhooks/twilio", params),  # re-targeted
        sign(gateway.token, f"{url}/whk_other", params),  # another address of ours
        sign(gateway.token, url, {**params, "MessageStatus": "sent"}),  # another body
        "",
        "x" * 5000,
    ):
        response = await gateway.client.post(
            "/webhooks/twilio", content=body, headers={**headers, "x-twilio-signature": signature}
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "WEBHOOK_SIGNATURE_INVALID"
    assert await WebhookInbox.filter(provider="twilio").count() == before
    # A genuine, signed callback naming a later status, replayed: processed once, and a
    # DELIVERED message does not go back.
    good = {**headers, "x-twilio-signature": sign(gateway.token, url, params)}
    first = await gateway.client.post("/webhooks/twilio", content=body, headers=good)
    replay = await gateway.client.post("/webhooks/twilio", content=body, headers=good)
    assert first.status_code == replay.status_code == 200
    assert (first.json()["duplicate"], replay.json()["duplicate"]) == (False, True)
    node = await eventually(status_is(gateway, owner, gid, "FAILED"), "the failure applies")
    assert node["errorCode"] == "30008"
    late = {**params, "MessageStatus": "sent"}
    ok = await gateway.client.post(
        "/webhooks/twilio",
        content=urlencode(late),
        headers={**headers, "x-twilio-signature": sign(gateway.token, url, late)},
    )
    assert ok.status_code == 200
    stored = await eventually(
        lambda: WebhookInbox.filter(event_id=f"{sid}:sent", status="processed").first(),
        "the late event is processed",
    )
    assert stored is not None
    assert (await status_is(gateway, owner, gid, "FAILED")())["status"] == "FAILED"


async def test_two_callbacks_racing_never_move_a_message_backwards(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    gateway.sandbox.configure(callbacks=None, inbound=f"{gateway.url}/webhooks/twilio")
    gid = await send_sms(gateway, owner, unique_number())
    node = await eventually(status_is(gateway, owner, gid, "ACCEPTED"), "accepted")
    sid = node["providerSid"]
    url = f"{gateway.url}/webhooks/twilio"
    headers = {"content-type": "application/x-www-form-urlencoded"}

    async def post(status: str) -> int:
        params = {"MessageSid": sid, "MessageStatus": status, "SmsSid": sid}
        response = await gateway.client.post(
            "/webhooks/twilio",
            content=urlencode(params),
            headers={**headers, "x-twilio-signature": sign(gateway.token, url, params)},
        )
        return response.status_code

    assert await asyncio.gather(*(post(s) for s in ("delivered", "sent", "queued"))) == [200] * 3
    await eventually(lambda: _processed(sid, 3), "the three callbacks are processed")
    assert (await status_is(gateway, owner, gid, "DELIVERED")())["status"] == "DELIVERED"


async def _processed(sid: str, count: int) -> bool:
    return await WebhookInbox.filter(event_id__startswith=sid, status="processed").count() == count


async def test_roles_and_a_foreign_tenants_message(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    gid = await send_sms(gateway, owner, unique_number())
    support, _ = await member_token(gateway.settings, owner, "SUPPORT")
    read_only, _ = await member_token(gateway.settings, owner, "READ_ONLY")
    accounting, _ = await member_token(gateway.settings, owner, "ACCOUNTING")
    one = {"i": {"to": unique_number(), "body": "x"}}
    assert "errors" not in await gql(gateway.client, SEND_SMS, one, support)
    for token in (read_only, accounting):
        assert error_codes(await gql(gateway.client, SEND_SMS, one, token)) == ["FORBIDDEN"]
    bulk = """mutation($i: SendBulkSmsInput!) { sendBulkSms(input: $i) { batch { id } } }"""
    only = {"i": {"body": "x", "recipients": [{"to": unique_number()}]}}
    assert error_codes(await gql(gateway.client, bulk, only, support)) == ["FORBIDDEN"]
    add = """mutation($i: AddPhoneOptOutInput!) { addPhoneOptOut(input: $i) { optOut { id } } }"""
    number = {"i": {"number": unique_number()}}
    assert error_codes(await gql(gateway.client, add, number, support)) == ["FORBIDDEN"]
    listed = "query { phoneOptOuts(first: 5) { totalCount } }"
    assert error_codes(await gql(gateway.client, listed, {}, support)) == ["FORBIDDEN"]
    assert "errors" not in await gql(gateway.client, add, number, owner.token)
    other = await register(gateway.client)
    assert (await gql(gateway.client, MESSAGE, {"id": gid}, other.token))["data"]["node"] is None
    row = await Message.get(id=decode_id(gid, "Message"))
    assert row.tenant_id != 0


SET_CREDENTIAL = """mutation($i: SetCredentialInput!) {
  setTenantCredential(input: $i) { credential { id } verified } }"""


async def test_a_tenants_own_twilio_account(gateway: Gateway) -> None:
    """Its own account, verified on save; its callbacks signed with its own token reach its
    own webhook source (named as the credential's statusCallbackUrl), not the system one."""
    owner = await register(gateway.client)
    account, token = "AC" + "7e" * 16, "tenant-own-token-123456"
    source = await gql(
        gateway.client,
        """mutation($i: CreateWebhookSourceInput!) { createWebhookSource(input: $i) { url } }""",
        {"i": {"provider": "twilio", "secret": token}},
        owner.token,
    )
    source_url = source["data"]["createWebhookSource"]["url"]
    secrets = {
        "accountSid": account,
        "authToken": token,
        "phoneNumber": "+1 415 555 0199",
        "statusCallbackUrl": source_url,
        "baseUrl": f"{gateway.url}/sandbox/twilio",
    }
    for bad, field in (
        ({"authToken": "invalid-token"}, "secrets.authToken"),
        ({"statusCallbackUrl": "javascript:alert(1)"}, "secrets.statusCallbackUrl"),
        ({"accountSid": "AC123"}, "secrets.accountSid"),
    ):
        refused = await gql(
            gateway.client, SET_CREDENTIAL,
            {"i": {"provider": "TWILIO", "secrets": {**secrets, **bad}}}, owner.token,
        )  # fmt: skip
        assert error_codes(refused) == ["BAD_USER_INPUT"], refused
        assert field in refused["errors"][0]["extensions"]["details"]
        assert token not in str(refused)
    saved = await gql(
        gateway.client, SET_CREDENTIAL, {"i": {"provider": "TWILIO", "secrets": secrets}},
        owner.token,
    )  # fmt: skip
    assert saved["data"]["setTenantCredential"]["verified"] is True, saved
    number = unique_number()
    gid = await send_sms(gateway, owner, number)
    await eventually(status_is(gateway, owner, gid, "DELIVERED"), "delivered via its source")
    [request] = [
        r for r in gateway.sandbox.recorded
        if r["method"] == "POST" and number.replace("+", "%2B") in str(r["body"])
    ]  # fmt: skip
    assert request["path"] == f"/2010-04-01/Accounts/{account}/Messages.json"
    sent = dict(_form(request["body"]))
    assert sent["From"] == "+14155550199"  # stored in E.164
    assert sent["StatusCallback"] == source_url
    stored = await WebhookInbox.filter(provider="twilio", event_id__endswith=":delivered")
    mine = [e for e in stored if e.payload.get("To") == number]
    assert mine and mine[0].tenant_id is not None  # through the tenant's own source
