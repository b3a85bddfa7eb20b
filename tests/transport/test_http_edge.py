"""The HTTP edge as GraphQL over HTTP and an operator expect it: content negotiation by
q-values, 415/406, GraphiQL without the internet, throttled bad bearers, slow bodies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re

import httpx
import pytest

from tests.conftest import register, running_server
from tests.factories import app_with, client_for

GRAPHQL_RESPONSE = "application/graphql-response+json"
QUERY = {"query": "{ serverInfo { version } }"}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json;q=0.5, application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json;q=0.2, application/json;q=0.9", "application/json"),
        ("application/json, application/graphql-response+json", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("*/*;q=0.1, application/json;q=0", GRAPHQL_RESPONSE),
        ("text/html, */*;q=0.8", "application/json"),
    ],
)
async def test_accept_q_values_choose_the_answer(client, accept, expected):
    response = await client.post("/graphql", json=QUERY, headers={"accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(expected)


@pytest.mark.parametrize(
    "accept", ["text/html", "application/xml", "application/json;q=0", "image/*, text/*"]
)
async def test_accept_allowing_neither_json_is_406(client, accept):
    response = await client.post("/graphql", json=QUERY, headers={"accept": accept})
    assert response.status_code == 406, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_ACCEPTABLE"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
async def test_unsupported_request_media_type_is_415(client, content_type):
    response = await client.post(
        "/graphql",
        content=b'{"query": "{ serverInfo { version } }"}',
        headers={"content-type": content_type},
    )
    assert response.status_code == 415, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_graphiql_loads_nothing_from_the_internet(client):
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    assert "graphiql" in html.lower()
    assert not re.search(r"""(src|href)=["']https?://""", html), "a CDN address is left"
    assets = re.findall(r"""(?:src|href)="(/graphiql/assets/[^"]+)"\s+integrity="([^"]+)\"""", html)
    assert len(assets) == 7, assets
    for path, integrity in assets:
        response = await client.get(path)
        assert response.status_code == 200, path
        digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
        assert integrity == f"sha384-{digest}", path


async def test_graphiql_assets_are_not_served_when_graphiql_is_off(settings):
    async with client_for(app_with(settings, graphiql=False)) as off:
        assert (await off.get("/graphiql/assets/graphiql.min.js")).status_code == 404


async def test_invalid_bearers_spend_the_anonymous_budget(settings):
    async with client_for(app_with(settings, rate_limit_anonymous="3/hour")) as tight:
        statuses = []
        for i in range(5):
            response = await tight.post(
                "/graphql", json=QUERY, headers={"authorization": f"Bearer not-a-token-{i}"}
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429], statuses
        # ...and the address's anonymous requests now wait too.
        plain = await tight.post("/graphql", json=QUERY)
        assert plain.status_code == 429


async def test_a_trickled_body_is_cut_after_the_read_timeout(settings):
    app = app_with(settings, body_read_timeout_seconds=0.5)
    async with running_server(app) as url:
        host, port = url.split("//", 1)[1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = b'{"query": "{ serverInfo { version } }"}'
        writer.write(
            b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body[:5]
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 30)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"REQUEST_TIMEOUT" in answer
        # The server goes on.
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.post("/graphql", json=QUERY)).status_code == 200


INTROSPECT = {"query": "{ __schema { queryType { name } } }"}


@pytest.mark.parametrize(
    ("policy", "anonymous", "signed_in"),
    [
        ("public", None, None),
        ("authenticated", "UNAUTHENTICATED", None),
        ("off", "FORBIDDEN", "FORBIDDEN"),
    ],
)
async def test_introspection_policy(settings, owner, policy, anonymous, signed_in):
    async with client_for(app_with(settings, introspection=policy)) as c:
        for token, expected in ((None, anonymous), (owner.token, signed_in)):
            headers = {"authorization": f"Bearer {token}"} if token else {}
            body = (await c.post("/graphql", json=INTROSPECT, headers=headers)).json()
            if expected is None:
                assert body["data"]["__schema"]["queryType"]["name"] == "Query", body
            else:
                assert [e["extensions"]["code"] for e in body["errors"]] == [expected], body
                assert body.get("data") is None
        # __typename is data, not introspection.
        plain = (await c.post("/graphql", json={"query": "{ __typename }"})).json()
        assert plain["data"] == {"__typename": "Query"}


def test_production_defaults_to_authenticated_introspection():
    from kit.settings import load_settings

    production = load_settings(
        switchboard_env="production",
        jwt_signing_keys="k1:" + "s" * 40,
        vault_keys="cHJvZHVjdGlvbi12YXVsdC1rZXktMzItYnl0ZXMhISE=",
    )
    assert production.introspection_policy == "authenticated"
    assert load_settings().introspection_policy == "public"


async def test_no_field_suggestions_for_anonymous_callers_in_production(settings):
    production = app_with(
        settings,
        switchboard_env="production",
        jwt_signing_keys=["k1:" + "s" * 40],
        vault_keys=["cHJvZHVjdGlvbi12YXVsdC1rZXktMzItYnl0ZXMhISE="],
    )
    typo = {"query": "{ serverInf { version } }"}
    async with client_for(production) as c:
        owner = await register(c)
        anonymous = (await c.post("/graphql", json=typo)).json()
        signed_in = (
            await c.post("/graphql", json=typo, headers={"authorization": f"Bearer {owner.token}"})
        ).json()
    assert "Did you mean" not in anonymous["errors"][0]["message"], anonymous
    assert anonymous["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Did you mean" in signed_in["errors"][0]["message"], signed_in
    async with client_for(app_with(settings)) as c:
        development = (await c.post("/graphql", json=typo)).json()
    assert "Did you mean" in development["errors"][0]["message"]
