"""The HTTP edge: request ids, GraphQL over HTTP negotiation, masked errors, logs."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import strawberry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from gateway.app import build_services
from gateway.http.graphql import GatewayGraphQL
from gateway.http.middleware import GatewayMiddleware
from kit.logging import make_handler
from models.mail import OutboundEmail
from schema.errors import GatewayErrors
from tests.conftest import STRONG_PASSWORD, error_codes, free_port, gql, register
from tests.factories import app_with, client_for

GRAPHQL_RESPONSE = "application/graphql-response+json"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Logs:
    """What the gateway's own log handler (request ids, scrubbing) writes, parsed."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def for_request(self, request_id: str) -> list[dict]:
        return [r for r in self.records if r.get("request_id") == request_id]


@pytest.fixture
def logs(caplog) -> Iterator[Logs]:
    caplog.set_level(logging.INFO)
    stream = io.StringIO()
    handler = make_handler(stream, json=True)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield Logs(stream)
    finally:
        root.removeHandler(handler)


# Request ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/graphql", {"json": {"query": "{ serverInfo { version } }"}}, 200),
        ("POST", "/graphql", {"json": {"query": "{ me { role } }"}}, 200),
        (
            "POST",
            "/graphql",
            {"content": b"{nope", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("POST", "/graphql", {"json": {}, "headers": {"authorization": "Bearer x"}}, 401),
        ("GET", "/graphql", {"headers": {"accept": "text/html"}}, 200),
        ("PUT", "/graphql", {}, 405),
        ("GET", "/health", {}, 200),
        ("GET", "/health/ready", {}, 200),
        ("GET", "/no/such/page", {}, 404),
    ],
)
async def test_every_answer_has_a_request_id(client, method, path, kwargs, status):
    response = await client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert HEX32.match(response.headers["x-request-id"])


@pytest.mark.parametrize("sane", ["abc-123", "req.42:a_b", "A" * 128, "0f8fad5b-d9cb-469f-a165"])
async def test_sane_incoming_request_id_is_kept(client, sane):
    response = await client.post(
        "/graphql", json={"query": "{ me { role } }"}, headers={"X-Request-ID": sane}
    )
    assert response.headers["x-request-id"] == sane
    assert response.json()["errors"][0]["extensions"]["requestId"] == sane


@pytest.mark.parametrize(
    "insane", ["", "has space", "A" * 129, "<script>", "semi;colon", 'quote"d', "ünï"]
)
async def test_insane_incoming_request_id_is_replaced(client, insane):
    response = await client.post(
        "/graphql",
        json={"query": "{ me { role } }"},
        headers=[(b"x-request-id", insane.encode("utf-8"))],
    )
    request_id = response.headers["x-request-id"]
    assert HEX32.match(request_id)
    assert response.json()["errors"][0]["extensions"]["requestId"] == request_id


async def test_request_id_in_error_and_logs(client, logs):
    response = await client.post(
        "/graphql", json={"query": "{ me { role } }"}, headers={"X-Request-ID": "trace-me-1"}
    )
    assert response.json()["errors"][0]["extensions"]["requestId"] == "trace-me-1"
    [access] = [r for r in logs.for_request("trace-me-1") if r["logger"] == "switchboard.http"]
    assert access["message"] == "POST /graphql 200"
    assert access["status"] == 200
    assert access["client_ip"] == "10.1.2.3"


async def test_each_request_gets_its_own_id(client):
    ids = set()
    for _ in range(5):
        response = await client.post("/graphql", json={"query": "{ serverInfo { version } }"})
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 5


# GraphQL over HTTP ------------------------------------------------------------------


async def post(client, query: str, accept: str | None, token: str | None = None):
    headers = {}
    if accept is not None:
        headers["accept"] = accept
    if token:
        headers["authorization"] = f"Bearer {token}"
    return await client.post("/graphql", json={"query": query}, headers=headers)


@pytest.mark.parametrize(
    ("query", "code"),
    [("{ serverInfo { ", "GRAPHQL_PARSE_FAILED"), ("{ nope }", "GRAPHQL_VALIDATION_FAILED")],
)
async def test_graphql_response_json_request_errors_are_400_without_data(client, query, code):
    response = await post(client, query, GRAPHQL_RESPONSE)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    body = response.json()
    assert "data" not in body
    assert error_codes(body) == [code]
    assert body["errors"][0]["extensions"]["requestId"] == response.headers["x-request-id"]


async def test_graphql_response_json_field_errors_are_200(client):
    response = await post(client, "{ serverInfo { version } me { role } }", GRAPHQL_RESPONSE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    body = response.json()
    assert "data" in body
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert body["errors"][0]["path"] == ["me"]


async def test_graphql_response_json_success(client, owner):
    response = await post(client, "{ me { role } }", GRAPHQL_RESPONSE, owner.token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert response.json() == {
        "data": {"me": {"role": "OWNER"}},
        "extensions": {"cost": {"requested": 1, "limit": 5000}},
    }


@pytest.mark.parametrize(
    "accept", [None, "application/json", "*/*", f"application/json, {GRAPHQL_RESPONSE}"]
)
@pytest.mark.parametrize("query", ["{ serverInfo { ", "{ nope }", "{ me { role } }"])
async def test_plain_json_is_always_200(client, accept, query):
    response = await post(client, query, accept)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["errors"][0]["extensions"]["code"]


async def test_graphql_response_preferred_when_listed_first(client):
    response = await post(client, "{ nope }", f"{GRAPHQL_RESPONSE}, application/json;q=0.9")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)


async def test_middleware_errors_honour_graphql_response(client):
    response = await client.post(
        "/graphql",
        json={"query": "{ serverInfo { version } }"},
        headers={"accept": GRAPHQL_RESPONSE, "authorization": "Bearer nope"},
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)


# Unexpected errors -------------------------------------------------------------------


@strawberry.type
class FragileQuery:
    @strawberry.field(description="Splits a budget; a zero divisor is a real bug.")
    def share(self, total: int, parts: int) -> float:
        return total / parts


def fragile_app(settings) -> Starlette:
    """The gateway's middleware and view over a test schema with a genuinely buggy field."""
    services = build_services(settings)
    schema = strawberry.Schema(query=FragileQuery, extensions=[GatewayErrors])
    view = GatewayGraphQL(schema, services)
    return Starlette(
        routes=[Route("/graphql", view, methods=["GET", "POST"])],
        middleware=[Middleware(GatewayMiddleware, services=services)],
    )


async def test_unexpected_error_is_masked_and_logged_under_the_request_id(settings, logs):
    async with client_for(fragile_app(settings)) as c:
        ok = await gql(c, "{ share(total: 10, parts: 4) }")
        assert ok["data"] == {"share": 2.5}
        response = await c.post("/graphql", json={"query": "{ share(total: 10, parts: 0) }"})
    assert response.status_code == 200
    body = response.json()
    request_id = response.headers["x-request-id"]
    [error] = body["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    assert "division" not in response.text and "Traceback" not in response.text
    [logged] = [r for r in logs.for_request(request_id) if r["logger"] == "switchboard.graphql"]
    assert logged["level"] == "ERROR"
    assert "ZeroDivisionError: division by zero" in logged["exc_info"]
    assert "share" in logged["message"]


async def test_unreachable_redis_lets_requests_through_and_logs_it(settings, logs):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with client_for(app_with(settings, redis_url=dead)) as c:
        response = await c.post("/graphql", json={"query": "{ serverInfo { version } }"})
    assert response.status_code == 200
    assert "errors" not in response.json()
    assert "x-ratelimit-limit" not in response.headers
    request_id = response.headers["x-request-id"]
    errors = [r for r in logs.for_request(request_id) if r["level"] == "ERROR"]
    # Other ERROR lines of the request may come along (a dead Redis fails more than the
    # limiter); the limiter's must be among them.
    assert any("rate limiter unavailable" in r["message"] for r in errors), errors


async def test_health_ready_reports_unreachable_redis(settings):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with client_for(app_with(settings, redis_url=dead)) as c:
        response = await c.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"] == {"store": True, "migrations": True, "redis": False}


async def test_health_ready_with_redis(settings, redis_url):
    async with client_for(app_with(settings, redis_url=redis_url)) as c:
        response = await c.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"store": True, "migrations": True, "redis": True}
    # Both providers with a client answer from their sandboxes: nothing is wrong.
    assert response.json()["status"] == "healthy"


# Client address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "seen"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7", "203.0.113.7"),  # the client forged the left-most hop
        ("203.0.113.7, 10.1.2.4", "203.0.113.7"),  # a second trusted proxy
        ("not-an-ip, 203.0.113.7", "203.0.113.7"),
        ("203.0.113.7, garbage", "10.1.2.3"),
        ("", "10.1.2.3"),
    ],
)
async def test_forwarded_for_is_read_from_the_right(settings, logs, forwarded, seen):
    app = app_with(settings, trusted_proxies=["10.1.2.3", "10.1.2.4"])
    async with client_for(app) as c:
        response = await c.get("/health", headers={"x-forwarded-for": forwarded})
    [access] = logs.for_request(response.headers["x-request-id"])
    assert access["client_ip"] == seen


async def test_forwarded_for_from_untrusted_peer_is_ignored(client, logs):
    response = await client.get("/health", headers={"x-forwarded-for": "203.0.113.7"})
    [access] = logs.for_request(response.headers["x-request-id"])
    assert access["client_ip"] == "10.1.2.3"


# No secret in logs -------------------------------------------------------------------


async def test_no_secret_reaches_the_log(settings, logs):
    app = app_with(settings, log_level="DEBUG")
    logging.getLogger().setLevel(logging.DEBUG)
    secrets: list[str] = [STRONG_PASSWORD]
    async with client_for(app) as c:
        acct = await register(c, org="Secretive")
        secrets += [acct.token, acct.refresh]
        login = await gql(
            c,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }",
            {"i": {"email": acct.email, "password": STRONG_PASSWORD}},
        )
        secrets += list(login["data"]["login"].values())
        wrong = await gql(
            c,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            {"i": {"email": acct.email, "password": "wrong but secret words"}},
        )
        assert error_codes(wrong) == ["UNAUTHENTICATED"]
        secrets.append("wrong but secret words")
        refreshed = await gql(
            c,
            "mutation($i: RefreshTokenInput!) "
            "{ refreshToken(input: $i) { accessToken refreshToken } }",
            {"i": {"refreshToken": login["data"]["login"]["refreshToken"]}},
        )
        secrets += list(refreshed["data"]["refreshToken"].values())
        key = await gql(
            c,
            "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }",
            {"i": {"name": "ci", "role": "READ_ONLY"}},
            token=acct.token,
        )
        api_key = key["data"]["createApiKey"]["secret"]
        secrets.append(api_key)
        used = await gql(c, "{ me { isApiKey } }", token=api_key)
        assert used["data"]["me"]["isApiKey"] is True
        # A token that is present but wrong is logged as a 401, never echoed.
        bad = await c.post(
            "/graphql",
            json={"query": "{ me { role } }"},
            headers={"authorization": f"Bearer {acct.token}x"},
        )
        assert bad.status_code == 401
        secrets.append(acct.token + "x")
        mails = await OutboundEmail.filter(recipient=acct.email)
        for mail in mails:  # email-verification tokens travel by mail only
            secrets += re.findall(r"#token=([A-Za-z0-9_-]{40,})$", mail.text, re.MULTILINE)
    # Code that logs a request body by mistake is caught by the scrubber too.
    logging.getLogger("switchboard.test").info(
        "body %s", json.dumps({"password": STRONG_PASSWORD, "refreshToken": acct.refresh})
    )
    text = logs.text
    assert len(logs.records) >= 8, text  # the flow was logged (access lines at least)
    assert "[REDACTED]" in text
    for secret in secrets:
        assert secret not in text, f"secret leaked into the log: {secret[:12]}…"
        for piece in re.split(r"[.\s]", secret):  # not even a JWT segment or a word run
            if len(piece) >= 20:
                assert piece not in text


async def test_cached_validation_errors_carry_each_requests_own_id(client):
    """ValidationCache hands the same error objects to every request sending the same
    invalid document; each answer must still carry its own request id."""
    seen = set()
    for _ in range(3):
        response = await post(client, "{ serverInfo { nope } }", "application/json")
        [error] = response.json()["errors"]
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]
        seen.add(error["extensions"]["requestId"])
    assert len(seen) == 3
