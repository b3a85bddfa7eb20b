"""The Twilio client against its sandbox, over real HTTP (uvicorn on loopback): the form
the Messages API takes, Basic auth (auth token or API key), Twilio's error codes, what
the shared layer retries (a send only when nothing reached Twilio), the breaker, and the
sandbox's signed callbacks checked with Twilio's own RequestValidator."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from kit.ratelimit import RateLimiter
from kit.signing import SignatureInvalid, TwilioVerifier
from providers import twilio
from providers.breaker import BreakerPolicy
from providers.errors import CircuitOpen, ProviderError
from providers.http import ProviderConfig, ProviderHTTP
from providers.retry import RetryPolicy
from providers.sandbox.twilio import TEMPLATES, TwilioSandbox
from tests.conftest import running_server

ACCOUNT = "AC" + "1f" * 16
TOKEN = "auth-token-for-tests-0123456789"
FAST_RETRY = RetryPolicy(max_attempts=4, base=0.05, cap=0.2, budget=10.0)
_OPEN: list[ProviderHTTP] = []


@pytest.fixture
async def served() -> AsyncIterator[tuple[TwilioSandbox, str, httpx.AsyncClient]]:
    app = TwilioSandbox()
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as control:
        try:
            yield app, url, control
        finally:
            while _OPEN:
                await _OPEN.pop().aclose()
            await app.aclose()


def client_for(
    url: str, credential: twilio.TwilioCredential | None = None, threshold: int = 100
) -> twilio.TwilioClient:
    cfg = ProviderConfig(
        name="twilio", retry=FAST_RETRY, breaker=BreakerPolicy(threshold=threshold)
    )
    http = ProviderHTTP(cfg, limiter=RateLimiter())
    _OPEN.append(http)
    return twilio.TwilioClient(
        http, credential or twilio.TwilioCredential(ACCOUNT, TOKEN), base_url=url
    )


async def sends(control: httpx.AsyncClient) -> list[dict[str, Any]]:
    got = await control.get("/_sandbox/requests", params={"method": "POST"})
    return list(got.json()["requests"])


async def test_a_send_is_the_documented_form_with_basic_auth(served: Any) -> None:
    _app, url, control = served
    client = client_for(url)
    sent = await client.send_message(
        to="+14155550100", sender="+15005550006", body="Hello ✓",
        status_callback="https://gw.example/webhooks/twilio",
    )  # fmt: skip
    assert sent.sid.startswith("SM") and sent.status == "queued" and sent.num_segments == 1
    [request] = await sends(control)
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert request["headers"]["authorization"].startswith("Basic [sha256:")
    assert dict(parse_qsl(request["body"])) == {
        "To": "+14155550100", "From": "+15005550006", "Body": "Hello ✓",
        "StatusCallback": "https://gw.example/webhooks/twilio",
    }  # fmt: skip
    fetched = await client.get_message(sent.sid)
    assert fetched.sid == sent.sid and fetched.to == "+14155550100"
    listed = await client.list_messages(to="+14155550100")
    assert [m.sid for m in listed] == [sent.sid]
    # An API key pair authenticates the same account.
    keyed = client_for(url, twilio.TwilioCredential(ACCOUNT, api_key_sid="SK" + "2" * 32,
                                                    api_key_secret="key-secret"))  # fmt: skip
    await keyed.send_message(to="+14155550101", sender="+15005550006", body="x")
    template = next(iter(TEMPLATES))
    media = await client.send_message(
        to="whatsapp:+14155550102", sender="whatsapp:+15005550006",
        content_sid=template, content_variables={"1": "Mon", "2": "3pm"},
    )  # fmt: skip
    assert media.body.startswith("Your appointment is coming up on Mon")


async def test_twilio_errors_keep_their_codes_and_are_not_retried(served: Any) -> None:
    _app, url, control = served
    client = client_for(url)
    cases = [
        ({"to": "+15005550001"}, 400, "21211"),
        ({"to": "+15005550004"}, 400, "21610"),
        ({"to": "+15005550009"}, 400, "21614"),
        ({"to": "whatsapp:+14155550100"}, 400, "21910"),
        ({"to": "+14155550100", "body": "x" * 1601}, 400, "21617"),
        ({"to": "+14155550100", "content_sid": "HX" + "f" * 32}, 400, "21655"),
        ({"to": "+14155550100", "media_urls": ["javascript:x"]}, 400, "21620"),
    ]
    for kwargs, status, code in cases:
        kwargs = {"sender": "+15005550006", "body": "hi", **kwargs}
        if "content_sid" in kwargs:
            kwargs.pop("body")
        with pytest.raises(ProviderError) as caught:
            await client.send_message(**kwargs)  # type: ignore[arg-type]
        assert (caught.value.status, caught.value.vendor_code) == (status, code), kwargs
        assert twilio.permanent(caught.value) and not twilio.outcome_unknown(caught.value)
    assert len(await sends(control)) == len(cases)  # each tried once
    wrong = client_for(url, twilio.TwilioCredential(ACCOUNT, "invalid-token"))
    with pytest.raises(ProviderError) as refused:
        await twilio.verify_key(wrong)
    assert (refused.value.status, refused.value.vendor_code) == (401, "20003")
    await twilio.verify_key(client)


async def test_the_layer_retries_a_send_only_when_nothing_reached_twilio(served: Any) -> None:
    _app, url, control = served
    client = client_for(url)
    await control.post("/_sandbox/faults", json={"status": 429, "count": 2, "retry_after": 0})
    sent = await client.send_message(to="+14155550100", sender="+15005550006", body="x")
    assert sent.sid and len(await sends(control)) == 3  # refused before processing: retried
    await control.delete("/_sandbox/requests")
    await control.post("/_sandbox/faults", json={"status": 503, "count": 1})
    with pytest.raises(ProviderError) as caught:
        await client.send_message(to="+14155550100", sender="+15005550006", body="x")
    assert caught.value.status == 503 and not twilio.permanent(caught.value)
    assert len(await sends(control)) == 1  # a 5xx may hide a send: not retried
    await control.delete("/_sandbox/requests")
    await control.post("/_sandbox/faults", json={"cut": True, "count": 1})
    with pytest.raises(ProviderError) as cut:
        await client.send_message(to="+14155550100", sender="+15005550006", body="x")
    assert twilio.outcome_unknown(cut.value)
    assert len(await sends(control)) == 1


async def test_the_breaker_opens_for_the_shared_credential(served: Any) -> None:
    _app, url, control = served
    client = client_for(url, threshold=2)
    await control.post("/_sandbox/faults", json={"status": 503, "count": -1})
    for _ in range(2):
        with pytest.raises(ProviderError):
            await client.send_message(to="+14155550100", sender="+15005550006", body="x")
    with pytest.raises(CircuitOpen):
        await client.send_message(to="+14155550100", sender="+15005550006", body="x")
    assert len(await sends(control)) == 2  # the third never left


async def test_callbacks_are_signed_as_twilio_signs_and_the_verifier_agrees(
    served: Any,
) -> None:
    app, url, _control = served
    received: list[tuple[str, dict[str, str], str]] = []

    async def hook(request: Request) -> Response:
        body = (await request.body()).decode()
        received.append((str(request.url), dict(parse_qsl(body)), request.headers.get(
            "x-twilio-signature", "")))  # fmt: skip
        return Response(status_code=204)

    receiver = Starlette(routes=[Route("/webhooks/twilio", hook, methods=["POST"])])
    async with running_server(receiver) as hook_url:
        app.configure(callbacks=f"{hook_url}/webhooks/", inbound=None, step=0)
        client = client_for(url)
        await client.send_message(
            to="+14155550100", sender="+15005550006", body="x",
            status_callback=f"{hook_url}/webhooks/twilio",
        )  # fmt: skip
        # Outside the configured receiver: recorded, never posted.
        await client.send_message(
            to="+14155550100", sender="+15005550006", body="x",
            status_callback="http://169.254.169.254/latest/meta-data",
        )  # fmt: skip
        await asyncio.wait_for(app.callbacks.drain(), 10)
    assert [p["MessageStatus"] for _, p, _ in received] == ["sent", "delivered"]
    validator = RequestValidator(TOKEN)
    verifier = TwilioVerifier()
    for where, params, signature in received:
        assert validator.validate(where, params, signature)
        raw = httpx.QueryParams(params).__str__().encode()
        event = verifier.verify({"X-Twilio-Signature": signature}, raw, TOKEN, url=where)
        assert event.event_type == "message.status"
        with pytest.raises(SignatureInvalid):
            verifier.verify({"X-Twilio-Signature": signature}, raw, TOKEN, url=where + "?x=1")
    refused = [d for d in app.callbacks.recorded() if "169.254" in d["url"]]
    assert refused and refused[0]["status"] is None


def test_the_verifier_refuses_hostile_requests() -> None:
    verifier = TwilioVerifier()
    url = "https://gw.example/webhooks/twilio"
    params = {"MessageSid": "SM" + "a" * 32, "Body": "hi"}
    good = RequestValidator(TOKEN).compute_signature(url, params)
    raw = httpx.QueryParams(params).__str__().encode()
    assert verifier.verify({"X-Twilio-Signature": good}, raw, TOKEN, url=url).event_type == (
        "message.inbound"
    )
    # The default port, added or removed, is the same URL (Twilio's validator agrees).
    assert verifier.verify(
        {"X-Twilio-Signature": good}, raw, TOKEN, url="https://gw.example:443/webhooks/twilio"
    )
    for headers, body, where in (
        ({}, raw, url),
        ({"X-Twilio-Signature": good}, raw, None),
        ({"X-Twilio-Signature": good + "x"}, raw, url),
        ({"X-Twilio-Signature": "\x00" * 30}, raw, url),
        ({"X-Twilio-Signature": base64.b64encode(b"x" * 500).decode()}, raw, url),
        ({"X-Twilio-Signature": good}, raw + b"&Body=more", url),
        ({"X-Twilio-Signature": good}, b"\xff\xfe", url),
        ({"X-Twilio-Signature": good}, b"a=" * 5000, url),
    ):
        with pytest.raises(SignatureInvalid):
            verifier.verify(headers, body, TOKEN, url=where)


async def test_an_account_has_one_auth_token(served: Any) -> None:
    _app, url, control = served
    await client_for(url).send_message(to="+14155550100", sender="+15005550006", body="x")
    other = client_for(url, twilio.TwilioCredential(ACCOUNT, "someone-elses-token"))
    with pytest.raises(ProviderError) as refused:
        await other.send_message(to="+14155550100", sender="+15005550006", body="x")
    assert (refused.value.status, refused.value.vendor_code) == (401, "20003")
    injected = await control.post(
        "/_sandbox/inbound", auth=(ACCOUNT, "someone-elses-token"),
        json={"from": "+14155550100", "to": "+15005550006", "body": "hi"},
    )  # fmt: skip
    assert injected.status_code == 401
