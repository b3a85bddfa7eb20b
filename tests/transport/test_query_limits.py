"""Query cost: validation is linear in the document, fragments are capped, and every
operation's cost (objects × page sizes, vendor calls weighted) is limited and reported."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import error_codes, gql, running_server
from tests.factories import app_with, store_counts


def doubling_fragments(levels: int) -> str:
    """Each fragment spreads the next one twice: 2^levels spreads from a short text."""
    parts = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    parts.append(f"fragment F{levels} on Query {{ serverInfo {{ version }} }}")
    return "query { ...F0 }\n" + "\n".join(parts)


def doubling_nested_fragments(levels: int) -> str:
    """Spreads under aliased fields: the expansion is real (nothing merges it away)."""
    parts = [
        f"fragment F{i} on Query {{ a: serverInfo {{ version }} ...F{i + 1} }}"
        for i in range(levels)
    ]
    parts.append(f"fragment F{levels} on Query {{ serverInfo {{ version }} }}")
    return "query { ...F0 ...F0 }\n" + "\n".join(parts)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("unchanged")
async def test_doubling_fragments_are_measured_once(client):
    # 40 levels: 2^40 walks for a limiter that re-walks each spread (the process hung).
    body = await gql(client, doubling_fragments(40))
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"], body
    error = body["errors"][0]
    assert "cost" in error["message"]
    assert error["extensions"]["cost"] > error["extensions"]["limit"]
    health = await client.get("/health")
    assert health.status_code == 200


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("unchanged")
async def test_aliases_through_fragments_count_per_spread(client):
    body = await gql(client, doubling_nested_fragments(30))
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"], body
    assert "aliases" in body["errors"][0]["message"]


@pytest.mark.usefixtures("unchanged")
async def test_fragments_per_document_are_capped(client):
    fragments = "\n".join(
        f"fragment F{i} on Query {{ serverInfo {{ version }} }}" for i in range(101)
    )
    body = await gql(client, "query { ...F0 }\n" + fragments)
    assert "GRAPHQL_VALIDATION_FAILED" in error_codes(body), body
    assert any("fragments" in e["message"] for e in body["errors"])
    assert body["errors"][0]["extensions"]["limit"] == 100


async def test_fragments_within_limits_still_work(client, owner):
    query = """
    query { ...A }
    fragment A on Query { me { ...B } }
    fragment B on Viewer { role user { ...C } }
    fragment C on User { email }
    """
    body = await gql(client, query, token=owner.token)
    assert "errors" not in body, body
    assert body["data"]["me"]["user"]["email"] == owner.email


async def test_cost_is_reported(client, owner):
    body = await gql(
        client, "{ contacts(first: 10) { edges { node { id owner { id } } } } }", token=owner.token
    )
    assert "errors" not in body, body
    # contacts (1) + 10 × (edges 1 + node 1 + owner 1)
    assert body["extensions"]["cost"] == {"requested": 31, "limit": 5000}


async def test_cost_follows_variables(client, owner):
    query = "query($n: Int) { contacts(first: $n) { edges { node { id } } } }"
    small = await gql(client, query, {"n": 5}, token=owner.token)
    large = await gql(client, query, {"n": 100}, token=owner.token)
    absent = await gql(client, query, {}, token=owner.token)
    assert small["extensions"]["cost"]["requested"] == 11
    assert large["extensions"]["cost"]["requested"] == 201
    assert absent["extensions"]["cost"]["requested"] == 41  # the default page, 20


async def test_costly_operation_is_refused_before_it_runs(client, owner):
    page = "contacts(first: 100) { edges { node { id owner { id } openTasks { id } } } }"
    query = "{ " + " ".join(f"c{i}: {page}" for i in range(15)) + " }"
    before = await store_counts()
    body = await gql(client, query, token=owner.token)
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"], body
    assert body["errors"][0]["extensions"]["cost"] == 15 * (1 + 100 * 4)
    assert body.get("data") is None
    assert await store_counts() == before


async def test_subscriptions_are_costed_too(settings, owner):
    from tests.transport.test_websocket import open_session, receive, subscribe

    async with running_server(app_with(settings, max_query_cost=40)) as url:
        ws = await open_session(url, {"Authorization": f"Bearer {owner.token}"})
        try:
            assert await receive(ws) == {"type": "connection_ack"}
            query = (
                'subscription { chatCompletion(input: {messages: [{role: USER, content: "hi"}]})'
                " { delta } }"
            )
            await subscribe(ws, "1", query, {})
            message = await receive(ws)
        finally:
            await ws.close()
    assert message["type"] == "error", message
    [error] = message["payload"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", error
    assert error["extensions"]["cost"] == 50


async def test_a_page_beyond_the_maximum_is_refused_by_the_list_not_the_cost(client, owner):
    body = await gql(client, "{ contacts(first: 100000) { totalCount } }", token=owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"], body


async def test_health_answers_while_documents_are_validated(client):
    documents = [gql(client, doubling_fragments(60)) for _ in range(5)]
    answers = await asyncio.gather(*documents, client.get("/health"))
    assert answers[-1].status_code == 200
    for body in answers[:-1]:
        assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
