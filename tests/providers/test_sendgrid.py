"""The SendGrid client against its sandbox, over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.header import decode_header, make_header
from email.headerregistry import Address

import httpx
import pytest

from kit.ratelimit import RateLimiter
from providers import sendgrid
from providers.breaker import BreakerPolicy
from providers.errors import FailureEvent, ProviderError
from providers.http import ProviderConfig, ProviderHTTP, Timeouts
from providers.retry import RetryPolicy
from providers.sandbox.sendgrid import SendGridSandbox
from tests.conftest import running_server

KEY = "SG.test-key.0123456789"
FAST_RETRY = RetryPolicy(max_attempts=4, base=0.05, cap=0.2, budget=10.0)


_OPEN: list[ProviderHTTP] = []


@pytest.fixture
async def served() -> AsyncIterator[tuple[SendGridSandbox, str, httpx.AsyncClient]]:
    app = SendGridSandbox()
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as control:
        try:
            yield app, url, control
        finally:
            while _OPEN:
                await _OPEN.pop().aclose()


def client_for(url: str, key: str = KEY, **config: object) -> sendgrid.SendGridClient:
    cfg = ProviderConfig(
        name="sendgrid",
        retry=FAST_RETRY,
        breaker=BreakerPolicy(threshold=100),
        **config,  # type: ignore[arg-type]
    )
    http = ProviderHTTP(cfg, limiter=RateLimiter())
    _OPEN.append(http)  # closed by `served`
    return sendgrid.SendGridClient(http, key, base_url=url)


async def requests_to(control: httpx.AsyncClient, path: str = "/v3/mail/send") -> list[dict]:
    got = await control.get("/_sandbox/requests", params={"path": path})
    return got.json()["requests"]


async def test_send_builds_the_v3_request_and_returns_the_message_id(served) -> None:
    app, url, control = served
    client = client_for(url)
    sent = await client.send_email(
        sender=Address("Acme Ltd", "hello", "acme.test"),
        to=["Ada Lovelace <ada@example.com>", "bob@example.com"],
        subject="Welcome",
        text="Hi",
        html="<p>Hi</p>",
        reply_to="support@acme.test",
        headers={
            "Message-ID": "<42@acme.test>",
            "List-Unsubscribe": "<https://acme.test/u/1>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Campaign": "Résumé",
        },
        custom_args={"email_id": "42"},
        categories=["welcome"],
    )
    assert sent.id and "." not in sent.id
    [request] = await requests_to(control)
    assert request["headers"]["authorization"].startswith("Bearer [sha256:")
    body = request["body"]
    assert body["personalizations"] == [
        {
            "to": [
                {"email": "ada@example.com", "name": "Ada Lovelace"},
                {"email": "bob@example.com"},
            ],
            "custom_args": {"email_id": "42"},
        }
    ]
    assert body["from"] == {"email": "hello@acme.test", "name": "Acme Ltd"}
    assert body["reply_to"] == {"email": "support@acme.test"}
    assert body["content"] == [
        {"type": "text/plain", "value": "Hi"},
        {"type": "text/html", "value": "<p>Hi</p>"},
    ]
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(make_header(decode_header(body["headers"]["X-Campaign"]))) == "Résumé"
    assert body["headers"]["X-Campaign"].isascii()
    assert body["categories"] == ["welcome"]
    assert "idempotency-key" not in request["headers"]
    [(_, stored)] = app.messages.items()
    assert stored["id"] == sent.id


async def test_sandbox_mode_is_validated_but_not_sent(served) -> None:
    app, url, _ = served
    sent = await client_for(url).send_email(
        sender="a@acme.test", to="b@example.com", subject="s", text="t", sandbox_mode=True
    )
    assert sent.id == ""
    assert app.messages == {}


async def test_validation_error_is_permanent_with_the_field(served) -> None:
    _, url, control = served
    with pytest.raises(ProviderError) as caught:
        await client_for(url).send_email(
            sender="a@acme.test", to="b@example.com", subject="s", text=None, html=None
        )
    err = caught.value
    assert err.status == 400 and err.vendor_code == "content"
    assert "content parameter is required" in err.message
    assert sendgrid.permanent(err) and not err.retryable
    assert len(await requests_to(control)) == 1  # never retried


async def test_every_validation_problem_is_reported(served) -> None:
    _, _, control = served
    r = await control.post(
        "/v3/mail/send",
        json={
            "personalizations": [{"to": [{"email": "nope"}]}],
            "from": {"email": "a@acme.test"},
            "subject": "s",
            "content": [{"type": "text/html", "value": "x"}, {"type": "text/plain", "value": "y"}],
            "headers": {"To": "x@example.com"},
        },
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 400
    fields = [e["field"] for e in r.json()["errors"]]
    assert fields == ["personalizations.0.to.0.email", "content", "headers"]
    assert all(set(e) == {"message", "field", "help"} for e in r.json()["errors"])


async def test_header_injection_is_refused_before_sending(served) -> None:
    _, url, control = served
    client = client_for(url)
    with pytest.raises(ValueError):
        await client.send_email(
            sender="a@acme.test", to="b@example.com", subject="s", text="t",
            headers={"X-Note": "a\r\nBcc: evil@example.com"},
        )  # fmt: skip
    with pytest.raises(ValueError):
        await client.send_email(
            sender="a@acme.test", to="Mallory\r\nBcc: x@example.com <m@example.com>",
            subject="s", text="t",
        )  # fmt: skip
    assert await requests_to(control) == []


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        ("", 401, "authorization required"),
        ("SG.invalid.key", 401, "authorization grant is invalid"),
        ("SG.restricted.key", 403, "access forbidden"),
    ],
)
async def test_key_errors_are_not_permanent(served, key: str, status: int, message: str) -> None:
    _, url, control = served
    with pytest.raises(ProviderError) as caught:
        await client_for(url, key).send_email(
            sender="a@acme.test", to="b@example.com", subject="s", text="t"
        )
    err = caught.value
    assert err.status == status and message in err.message and err.is_auth_error
    assert not sendgrid.permanent(err)
    assert len(await requests_to(control)) == 1


async def test_429_is_retried_after_retry_after(served) -> None:
    _, url, control = served
    await control.post("/_sandbox/faults", json={"status": 429, "retry_after": 0.2})
    sent = await client_for(url).send_email(
        sender="a@acme.test", to="b@example.com", subject="s", text="t"
    )
    assert sent.id
    recorded = await requests_to(control)
    assert [r["status"] for r in recorded] == [429, 202]
    assert recorded[1]["at"] - recorded[0]["at"] >= 0.15


async def test_429_that_persists_raises_with_the_wait(served) -> None:
    _, url, control = served
    await control.post("/_sandbox/faults", json={"status": 429, "retry_after": 60, "count": -1})
    with pytest.raises(ProviderError) as caught:
        await client_for(url).send_email(
            sender="a@acme.test", to="b@example.com", subject="s", text="t"
        )
    err = caught.value
    assert err.status == 429 and err.retryable and err.retry_after == 60
    assert err.vendor_code == "too_many_requests" and not sendgrid.permanent(err)
    assert len(await requests_to(control)) == 1  # 60 s is past the policy's wait


async def test_5xx_is_transient_and_a_send_is_not_retried(served) -> None:
    _, url, control = served
    await control.post("/_sandbox/faults", json={"status": 503})
    with pytest.raises(ProviderError) as caught:
        await client_for(url).send_email(
            sender="a@acme.test", to="b@example.com", subject="s", text="t"
        )
    err = caught.value
    assert err.status == 503 and err.retryable and not sendgrid.permanent(err)
    assert err.message == "service unavailable"
    # No idempotency key: SendGrid may have taken it, so the layer did not try again.
    assert len(await requests_to(control)) == 1


async def test_timeout_after_the_request_was_written_is_not_retried(served) -> None:
    _, url, control = served
    await control.post("/_sandbox/faults", json={"latency_ms": 2000})
    client = client_for(url, timeouts=Timeouts(connect=1.0, read=0.3, total=0.5))
    with pytest.raises(ProviderError) as caught:
        await client.send_email(sender="a@acme.test", to="b@example.com", subject="s", text="t")
    err = caught.value
    assert err.status is None and sendgrid.outcome_unknown(err)
    assert len(await requests_to(control)) == 1


async def test_cut_connection_is_not_retried(served) -> None:
    _, url, control = served
    await control.post("/_sandbox/faults", json={"cut": True})
    with pytest.raises(ProviderError) as caught:
        await client_for(url).send_email(
            sender="a@acme.test", to="b@example.com", subject="s", text="t"
        )
    assert sendgrid.outcome_unknown(caught.value)
    assert len(await requests_to(control)) == 1


async def test_connection_refused_is_retried_because_nothing_was_sent() -> None:
    from tests.conftest import free_port

    failures: list[FailureEvent] = []
    config = ProviderConfig(name="sendgrid", retry=FAST_RETRY, breaker=BreakerPolicy(threshold=100))
    http = ProviderHTTP(config, limiter=RateLimiter(), hooks=[failures.append])
    client = sendgrid.SendGridClient(http, KEY, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as caught:
        await client.send_email(sender="a@acme.test", to="b@example.com", subject="s", text="t")
    err = caught.value
    assert err.vendor_code == "connect_failed" and not sendgrid.outcome_unknown(err)
    # Every try: a connection that never opened proves SendGrid did nothing.
    assert [f.attempts for f in failures] == [FAST_RETRY.max_attempts]
    await http.aclose()


async def test_verify_key(served) -> None:
    _, url, _ = served
    await sendgrid.verify_key(client_for(url))
    for key, status in (("SG.invalid.key", 401), ("SG.restricted.key", 403)):
        with pytest.raises(ProviderError) as caught:
            await sendgrid.verify_key(client_for(url, key))
        assert caught.value.status == status


def test_parse_error_shapes() -> None:
    body = b'{"errors":[{"message":"Does not contain a valid address.","field":"from.email"}]}'
    assert sendgrid.parse_error(400, {}, body) == (
        "from.email",
        "from.email: Does not contain a valid address.",
    )
    assert sendgrid.parse_error(401, {}, b'{"errors":[{"field":null,"message":"nope"}]}') == (
        "unauthorized",
        "nope",
    )
    assert sendgrid.parse_error(502, {}, b"<html>bad gateway</html>") == (
        "server_error",
        "<html>bad gateway</html>",
    )
    assert sendgrid.parse_error(400, {}, b'{"errors": "x"}')[0] == "bad_request"


def test_message_id_of_an_event() -> None:
    assert sendgrid.message_id_of("W86EgYT6SQKk0lRflfLRsA.filterdrecv-5645d9c87f-1-0.0") == (
        "W86EgYT6SQKk0lRflfLRsA"
    )


def test_settings_accept_the_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import make_settings

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.from-env.key")
    monkeypatch.setenv("SENDGRID_FROM_EMAIL", "mail@acme.test")
    settings = make_settings()
    assert settings.system_credentials("sendgrid") == {
        "api_key": "SG.from-env.key",
        "from_email": "mail@acme.test",
    }
