"""Inbound budgets over real HTTP, on in-memory counters and on Redis: per address for
anonymous callers, per principal for signed-in ones, per identified source for webhooks
(unknown webhook addresses per client address)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import error_codes, gql, register
from tests.factories import app_with, client_for

QUERY = {"query": "{ serverInfo { version } }"}
ME = {"query": "{ me { role } }"}


@pytest.fixture(params=["memory", "redis"])
def backend(request) -> dict:
    """Limiter settings: memory, or Redis with a key prefix of this test's own."""
    if request.param == "memory":
        return {"redis_url": ""}
    redis_url = request.getfixturevalue("redis_url")
    return {"redis_url": redis_url, "redis_key_prefix": f"sbtest-{uuid.uuid4().hex[:12]}"}


def assert_budget_headers(response, limit: int, remaining: int) -> None:
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == str(remaining)
    reset = int(response.headers["x-ratelimit-reset"])
    assert time.time() - 1 <= reset <= time.time() + 2 * 3600 + 1


def assert_limited_graphql(response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert_budget_headers(response, limit, 0)
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 2 * 3600
    body = response.json()
    assert "data" not in body
    assert error_codes(body) == ["RATE_LIMITED"]
    extensions = body["errors"][0]["extensions"]
    assert extensions["retryAfter"] == retry_after
    assert extensions["requestId"] == response.headers["x-request-id"]


async def test_anonymous_budget_per_address(settings, backend):
    app = app_with(settings, rate_limit_anonymous="3/hour", **backend)
    async with client_for(app, "198.51.100.1") as c, client_for(app, "198.51.100.2") as other:
        for remaining in (2, 1, 0):
            response = await c.post("/graphql", json=QUERY)
            assert response.status_code == 200
            assert_budget_headers(response, 3, remaining)
        assert_limited_graphql(await c.post("/graphql", json=QUERY), 3)
        # Still refused, whatever the request: the budget is the address's.
        assert_limited_graphql(await c.get("/graphql", params=QUERY), 3)
        # Another address has its own budget.
        response = await other.post("/graphql", json=QUERY)
        assert response.status_code == 200
        assert_budget_headers(response, 3, 2)
        # Health checks are never limited.
        assert (await c.get("/health")).status_code == 200


async def test_authenticated_budget_per_principal(settings, backend):
    app = app_with(
        settings,
        rate_limit_anonymous="1000/hour",
        rate_limit_authenticated="3/hour",
        **backend,
    )
    async with client_for(app) as c:
        alice = await register(c, org="Alice Inc")
        bob = await register(c, org="Bob Inc")
        for remaining in (2, 1, 0):
            response = await c.post(
                "/graphql", json=ME, headers={"authorization": f"Bearer {alice.token}"}
            )
            assert response.status_code == 200, response.text
            assert_budget_headers(response, 3, remaining)
        limited = await c.post(
            "/graphql", json=ME, headers={"authorization": f"Bearer {alice.token}"}
        )
        assert_limited_graphql(limited, 3)
        # Bob, from the same address, and anonymous callers are not affected.
        bob_body = await gql(c, ME["query"], token=bob.token)
        assert bob_body["data"]["me"]["role"] == "OWNER"
        anonymous = await c.post("/graphql", json=QUERY)
        assert anonymous.status_code == 200
        assert anonymous.headers["x-ratelimit-limit"] == "1000"


def signed(body: bytes, secret: str) -> dict[str, str]:
    import hashlib
    import hmac

    return {"X-Signature": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


async def test_webhook_budget_per_source_and_unknown_addresses_per_client(settings, backend):
    """Junk sent to made-up addresses uses the sender's own budget (per client address),
    never the budget of a real source, whose signed events still go through."""
    secret = "system-secret-0123"
    app = app_with(
        settings, rate_limit_webhooks="2/hour", rate_limit_anonymous="3/hour",
        webhook_system_secrets={"generic": secret}, **backend,
    )  # fmt: skip
    async with client_for(app, "198.51.100.7") as junk, client_for(app, "198.51.100.8") as c:
        for remaining in (2, 1, 0):
            response = await junk.post(f"/webhooks/generic/whk_junk{remaining}", content=b"{}")
            assert response.status_code == 404
            assert_budget_headers(response, 3, remaining)
        limited = await junk.post("/webhooks/generic/whk_more", content=b"{}")
        assert limited.status_code == 429
        assert_budget_headers(limited, 3, 0)
        assert int(limited.headers["retry-after"]) >= 1
        # Outside /graphql the error has the plain shape.
        error = limited.json()["error"]
        assert error["code"] == "RATE_LIMITED"
        assert error["retryAfter"] == int(limited.headers["retry-after"])
        assert error["requestId"] == limited.headers["x-request-id"]
        # The identified source has a budget of its own, untouched by the junk.
        for remaining in (1, 0):
            body = f'{{"id": "evt_{remaining}", "type": "ping"}}'.encode()
            response = await junk.post(
                "/webhooks/generic", content=body, headers=signed(body, secret)
            )
            assert response.status_code == 200, response.text
            assert_budget_headers(response, 2, remaining)
        body = b'{"id": "evt_x", "type": "ping"}'
        over = await c.post("/webhooks/generic", content=body, headers=signed(body, secret))
        assert over.status_code == 429  # the source's budget, wherever it is sent from
        # Another client's junk has its own per-address budget.
        assert (await c.post("/webhooks/generic/whk_junk", content=b"{}")).status_code == 404


async def test_graphql_response_json_429(settings, backend):
    app = app_with(settings, rate_limit_anonymous="1/hour", **backend)
    async with client_for(app) as c:
        await c.post("/graphql", json=QUERY)
        response = await c.post(
            "/graphql", json=QUERY, headers={"accept": "application/graphql-response+json"}
        )
        assert response.status_code == 429
        assert response.headers["content-type"].startswith("application/graphql-response+json")


async def test_two_instances_share_one_redis_budget(settings, redis_url):
    shared = {"redis_url": redis_url, "redis_key_prefix": f"sbtest-{uuid.uuid4().hex[:12]}"}
    first = app_with(settings, rate_limit_anonymous="4/hour", **shared)
    second = app_with(settings, rate_limit_anonymous="4/hour", **shared)
    assert first.state.services.limiter is not second.state.services.limiter
    async with client_for(first) as a, client_for(second) as b:
        seen = []
        for client in (a, b, a, b):
            response = await client.post("/graphql", json=QUERY)
            assert response.status_code == 200
            seen.append(int(response.headers["x-ratelimit-remaining"]))
        assert seen == [3, 2, 1, 0]
        assert_limited_graphql(await a.post("/graphql", json=QUERY), 4)
        assert_limited_graphql(await b.post("/graphql", json=QUERY), 4)


async def test_memory_counters_are_per_process(settings):
    """Without REDIS_URL each process counts alone (the README says so)."""
    first = app_with(settings, rate_limit_anonymous="2/hour")
    second = app_with(settings, rate_limit_anonymous="2/hour")
    async with client_for(first) as a, client_for(second) as b:
        for _ in range(2):
            assert (await a.post("/graphql", json=QUERY)).status_code == 200
        assert (await a.post("/graphql", json=QUERY)).status_code == 429
        assert (await b.post("/graphql", json=QUERY)).status_code == 200


async def test_budgets_off(settings):
    app = app_with(settings, rate_limit_anonymous="1/hour", rate_limit_enabled=False)
    async with client_for(app) as c:
        for _ in range(3):
            response = await c.post("/graphql", json=QUERY)
            assert response.status_code == 200
            assert "x-ratelimit-limit" not in response.headers
