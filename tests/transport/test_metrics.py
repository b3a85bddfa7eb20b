"""/metrics: access rules, and the counters moving after real traffic."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from kit.settings import Settings
from tests.conftest import Store, gql, make_settings
from tests.credentials.test_credentials import SET_TENANT


@pytest.fixture
def settings(store: Store) -> Settings:
    # The sandbox below runs on a loopback port other than PUBLIC_URL's: to the outbound
    # guard a private address like any other, so the operator allows loopback here.
    return make_settings(database_url=store.url, outbound_allowed_hosts=["127.0.0.1/32"])


TOKEN = "metrics-" + uuid.uuid4().hex


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(table: dict[Any, float], name: str, **labels: str) -> float:
    return table.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_access_rules(store):
    open_app = create_app(make_settings(database_url=store.url), configure_logs=False)
    remote = httpx.ASGITransport(app=open_app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=remote, base_url="http://testserver") as c:
        refused = await c.get("/metrics")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "FORBIDDEN"
    local = httpx.ASGITransport(app=open_app, client=("127.0.0.1", 5555))
    async with httpx.AsyncClient(transport=local, base_url="http://testserver") as c:
        ok = await c.get("/metrics")
        assert ok.status_code == 200 and "switchboard_http_requests_total" in ok.text

    token_app = create_app(
        make_settings(database_url=store.url, metrics_token=TOKEN), configure_logs=False
    )
    remote = httpx.ASGITransport(app=token_app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=remote, base_url="http://testserver") as c:
        assert (await c.get("/metrics")).status_code == 401
        wrong = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert TOKEN not in wrong.text
        ok = await c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain")


async def test_counters_after_traffic(owner, live_server, app):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=live_server) as c:  # loopback: open
        before = samples((await c.get("/metrics")).text)
        me = await c.post(
            "/graphql",
            json={"query": "query WhoAmI { me { role } }"},
            headers={"Authorization": f"Bearer {owner.token}"},
        )
        assert me.json()["data"]["me"]["role"] == "OWNER"
        bad = await gql(
            c,
            "mutation Nope { removeTenantCredential(input: {provider: ZOOM}) { removed } }",
            token=owner.token,
        )
        assert bad["errors"]
        # A vendor call through the shared layer (Resend key check against the sandbox).
        key = "re_" + uuid.uuid4().hex
        body = await gql(
            c,
            SET_TENANT,
            {
                "input": {
                    "provider": "RESEND",
                    "secrets": {"apiKey": key, "baseUrl": f"{live_server}/sandbox/resend"},
                }
            },
            owner.token,
        )
        assert body["data"]["setTenantCredential"]["verified"] is True
        await c.get(f"/sandbox/resend/emails/{uuid.uuid4()}")  # a templated route
        after_text = (await c.get("/metrics", headers=headers)).text
    after = samples(after_text)
    await app.state.services.providers.aclose()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        grew("switchboard_graphql_operations_total", operation="WhoAmI", type="query", outcome="ok")
        == 1
    )
    assert (
        grew(
            "switchboard_graphql_operations_total",
            operation="Nope",
            type="mutation",
            outcome="error",
        )
        == 1
    )
    assert (
        grew("switchboard_graphql_operation_seconds_count", operation="WhoAmI", type="query") == 1
    )
    assert (
        grew("switchboard_http_requests_total", route="/graphql", method="POST", status="2xx") >= 3
    )
    # Routes are labelled by their template, never by the raw path.
    assert (
        grew(
            "switchboard_http_requests_total",
            route="/sandbox/resend/emails/{email_id}",
            method="GET",
            status="4xx",
        )
        >= 1
    )
    assert "emails/0" not in after_text and key not in after_text
    assert (
        grew(
            "switchboard_outbound_calls_total",
            provider="resend",
            operation="verify_credential",
            outcome="failure",  # the probe id is a 404: the key works
        )
        == 1
    )
    assert ("switchboard_breaker_state", (("provider", "resend"),)) in after
