"""WhatsApp end to end through the Twilio sandbox: an approved template with variables,
text with media inside the 24-hour window, free-form text outside it (63016), and the
checks made before anything is written."""

from __future__ import annotations

import json

from models.messaging import Message
from providers.sandbox.twilio import TEMPLATES
from tests.conftest import error_codes, eventually, gql, register
from tests.messaging.conftest import (
    SANDBOX_ACCOUNT,
    SEND_WHATSAPP,
    Gateway,
    status_is,
    subscribe_status,
    unique_number,
)

REMINDER = next(sid for sid, (name, _) in TEMPLATES.items() if name == "appointment_reminder")


async def whatsapp(gw: Gateway, token: str, payload: dict[str, object]) -> dict[str, object]:
    return await gql(gw.client, SEND_WHATSAPP, {"i": payload}, token)


async def test_a_template_reaches_read_and_the_subscription_sees_it(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    number = unique_number()
    template = {"contentSid": REMINDER, "variables": {"1": "Monday", "2": "3pm"}}
    sent = await whatsapp(gateway, owner.token, {"to": number, "template": template})
    assert "errors" not in sent, sent
    message = sent["data"]["sendWhatsApp"]["message"]  # type: ignore[index]
    assert (message["channel"], message["contentSid"]) == ("WHATSAPP", REMINDER)
    seen = await subscribe_status(gateway, owner, message["id"], {"READ"})
    order = ["QUEUED", "SENDING", "ACCEPTED", "SENT", "DELIVERED", "READ"]
    assert seen[-1] == "READ", seen
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    [request] = [m for m in gateway.created() if m["To"] == f"whatsapp:{number}"]
    assert request["From"] == "whatsapp:+15005550006" and request["ContentSid"] == REMINDER
    assert json.loads(request["ContentVariables"]) == {"1": "Monday", "2": "3pm"}
    assert "Body" not in request
    stored = gateway.sandbox.messages[(SANDBOX_ACCOUNT, _sid(gateway, number))]
    assert stored["body"] == "Your appointment is coming up on Monday at 3pm."


def _sid(gw: Gateway, number: str) -> str:
    return next(
        sid for (_, sid), m in gw.sandbox.messages.items() if m["to"] == f"whatsapp:{number}"
    )


async def test_media_inside_the_window_and_text_outside_it(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    fresh, known = unique_number(), unique_number()
    await gateway.inbound(known, "Hello, is my order ready?", channel="whatsapp")
    media = ["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.pdf"]
    inside = await whatsapp(
        gateway, owner.token, {"to": known, "body": "Here it is", "mediaUrls": media}
    )
    assert "errors" not in inside, inside
    gid = inside["data"]["sendWhatsApp"]["message"]["id"]  # type: ignore[index]
    await eventually(status_is(gateway, owner, gid, "READ"), "read")
    [request] = [
        r for r in gateway.sandbox.recorded
        if r["method"] == "POST" and f"whatsapp%3A{known.replace('+', '%2B')}" in str(r["body"])
    ]  # fmt: skip
    assert str(request["body"]).count("MediaUrl=") == 2
    outside = await whatsapp(gateway, owner.token, {"to": fresh, "body": "Hi there"})
    gid = outside["data"]["sendWhatsApp"]["message"]["id"]  # type: ignore[index]
    node = await eventually(status_is(gateway, owner, gid, "FAILED"), "outside the window")
    assert node["errorCode"] == "63016"


async def test_templates_twilio_refuses_fail_with_its_code(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    unknown = await whatsapp(gateway, owner.token, {
        "to": unique_number(), "template": {"contentSid": "HX" + "0" * 32}})  # fmt: skip
    partial = {"contentSid": REMINDER, "variables": {"1": "x"}}
    missing = await whatsapp(gateway, owner.token, {"to": unique_number(), "template": partial})
    for result, code in ((unknown, "21655"), (missing, "21656")):
        gid = result["data"]["sendWhatsApp"]["message"]["id"]  # type: ignore[index]
        node = await eventually(status_is(gateway, owner, gid, "FAILED"), code)
        assert node["errorCode"] == code


async def test_whatsapp_input_is_checked_before_anything_is_written(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    before = await Message.all().count()
    to = unique_number()
    cases = [
        {"to": to},  # nothing to send
        {"to": to, "body": "x", "template": {"contentSid": REMINDER}},
        {"to": to, "template": {"contentSid": "not-a-sid"}},
        {"to": to, "template": {"contentSid": REMINDER, "variables": {"1": {"nested": 1}}}},
        {"to": to, "template": {"contentSid": REMINDER, "variables": ["a"]}},
        {"to": to, "mediaUrls": ["javascript:alert(1)"]},
        {"to": to, "mediaUrls": ["ftp://files.example.com/a"]},
        {"to": to, "mediaUrls": [f"https://cdn.example.com/{i}.jpg" for i in range(11)]},
        {"to": to, "mediaUrls": ["https://cdn.example.com/" + "a" * 3000]},
        {"to": to, "body": "x" * 1601},
    ]
    for payload in cases:
        result = await whatsapp(gateway, owner.token, payload)
        assert error_codes(result) == ["BAD_USER_INPUT"], (payload, result)
    result = await whatsapp(gateway, owner.token, {"to": "whatsapp:+1", "body": "x"})
    assert error_codes(result) == ["INVALID_PHONE_NUMBER"]
    assert await Message.all().count() == before
