"""Leads: CRUD, money validation, the status pipeline, tenancy, roles, batch upserts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from kit.roles import Role
from tests.conftest import error_codes, gql, register
from tests.contacts.test_contacts import add_member, create_contact, details
from tests.factories import store_counts

LEAD_FIELDS = (
    "id title status value currency source externalId closedAt "
    "owner { id } contact { id name } openTasks { title }"
)
CREATE = (
    f"""mutation($i: CreateLeadInput!) {{ createLead(input: $i) {{ lead {{ {LEAD_FIELDS} }} }} }}"""
)
UPDATE = (
    f"""mutation($i: UpdateLeadInput!) {{ updateLead(input: $i) {{ lead {{ {LEAD_FIELDS} }} }} }}"""
)
DELETE = "mutation($i: DeleteLeadInput!) { deleteLead(input: $i) { deletedId } }"
NODE = "query($id: ID!) { node(id: $id) { ... on Lead { id title } } }"
UPSERT = """mutation($i: UpsertLeadsInput!) {
  upsertLeads(input: $i) {
    created updated unchanged failed
    results { index outcome lead { id title status value contact { id } }
              error { code details { field message } } }
  }
}"""


async def create_lead(client: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    body = await gql(client, CREATE, {"i": {"title": "Big deal", **fields}}, token=token)
    assert "errors" not in body, body
    lead: dict[str, Any] = body["data"]["createLead"]["lead"]
    return lead


async def move(client: httpx.AsyncClient, token: str, lead_id: str, status: str) -> dict[str, Any]:
    return await gql(client, UPDATE, {"i": {"id": lead_id, "status": status}}, token=token)


async def test_create_update_delete(client, owner):
    contact = await create_contact(client, owner.token)
    lead = await create_lead(
        client,
        owner.token,
        value="1250.50",
        currency="eur",
        source="webinar",
        contactId=contact["id"],
        ownerId=owner.user_id,
        externalId="deal-1",
    )
    assert lead["status"] == "NEW"
    assert lead["value"] == "1250.50"
    assert lead["currency"] == "EUR"
    assert lead["contact"]["id"] == contact["id"]
    assert lead["owner"]["id"] == owner.user_id
    assert lead["closedAt"] is None

    body = await gql(
        client,
        UPDATE,
        {"i": {"id": lead["id"], "contactId": None, "value": "99"}},
        token=owner.token,
    )
    changed = body["data"]["updateLead"]["lead"]
    assert changed["contact"] is None
    assert changed["value"] == "99.00"
    assert changed["source"] == "webinar"

    node = await gql(client, NODE, {"id": lead["id"]}, token=owner.token)
    assert node["data"]["node"]["title"] == "Big deal"
    deleted = await gql(client, DELETE, {"i": {"id": lead["id"]}}, token=owner.token)
    assert deleted["data"]["deleteLead"]["deletedId"] == lead["id"]
    assert (await gql(client, NODE, {"id": lead["id"]}, token=owner.token))["data"]["node"] is None


async def test_money_and_text_validation(client, owner):
    before = await store_counts()
    cases = [
        ({"currency": "XYZ"}, {"currency"}),
        ({"currency": "dollars"}, {"currency"}),
        ({"value": "-1"}, {"value"}),
        ({"value": "10.123", "currency": "USD"}, {"value"}),
        ({"value": "10.5", "currency": "JPY"}, {"value"}),
        ({"value": "NaN"}, {"value"}),
        ({"value": "1e20"}, {"value"}),
        ({"title": "t" * 201, "source": "s" * 101}, {"title", "source"}),
        ({"title": "   "}, {"title"}),
    ]
    for fields, expected in cases:
        body = await gql(client, CREATE, {"i": {"title": "Deal", **fields}}, token=owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (fields, body)
        assert set(details(body)) == expected, (fields, body)
    not_a_number = await gql(
        client, CREATE, {"i": {"title": "D", "value": "ten"}}, token=owner.token
    )
    assert error_codes(not_a_number) == ["BAD_USER_INPUT"]
    assert await store_counts() == before
    ok = await create_lead(client, owner.token, value="10.125", currency="KWD")
    assert (ok["value"], ok["currency"]) == ("10.125", "KWD")
    # Switching to a currency with fewer decimals would lose money: refused.
    body = await gql(client, UPDATE, {"i": {"id": ok["id"], "currency": "JPY"}}, token=owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "currency" in details(body)


async def test_status_pipeline(client, owner):
    lead = await create_lead(client, owner.token)
    # Cannot jump from NEW straight to WON.
    body = await move(client, owner.token, lead["id"], "WON")
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "status" in details(body)
    for status in ["CONTACTED", "NEW", "QUALIFIED", "CONTACTED", "QUALIFIED"]:
        body = await move(client, owner.token, lead["id"], status)
        assert body["data"]["updateLead"]["lead"]["status"] == status, body
    won = await move(client, owner.token, lead["id"], "WON")
    assert won["data"]["updateLead"]["lead"]["closedAt"]
    # WON is final: nothing moves it, not even back one step.
    for status in ["QUALIFIED", "NEW", "LOST", "CONTACTED"]:
        body = await move(client, owner.token, lead["id"], status)
        assert error_codes(body) == ["BAD_USER_INPUT"], status
        assert "final" in details(body)["status"]
    same = await move(client, owner.token, lead["id"], "WON")  # staying put is no move
    assert same["data"]["updateLead"]["lead"]["status"] == "WON"

    lost = await create_lead(client, owner.token)
    assert (await move(client, owner.token, lost["id"], "LOST"))["data"]["updateLead"]["lead"][
        "closedAt"
    ]
    assert error_codes(await move(client, owner.token, lost["id"], "NEW")) == ["BAD_USER_INPUT"]

    # Leads synced from elsewhere may start in any stage.
    closed = await create_lead(client, owner.token, status="WON")
    assert closed["status"] == "WON" and closed["closedAt"]


async def test_foreign_tenant_ids_are_not_found(client, owner):
    other = await register(client, org="Foreign Leads")
    their_contact = await create_contact(client, other.token)
    their_lead = await create_lead(client, other.token)
    mine = await create_lead(client, owner.token)
    before = await store_counts()
    checks = [
        (UPDATE, {"i": {"id": their_lead["id"], "title": "Stolen"}}),
        (DELETE, {"i": {"id": their_lead["id"]}}),
        (CREATE, {"i": {"title": "X", "contactId": their_contact["id"]}}),
        (CREATE, {"i": {"title": "X", "ownerId": other.user_id}}),
        (UPDATE, {"i": {"id": mine["id"], "contactId": their_contact["id"]}}),
        (UPDATE, {"i": {"id": mine["id"], "ownerId": other.user_id}}),
        (UPDATE, {"i": {"id": their_contact["id"], "title": "wrong type"}}),
        (
            "query($c: ID!) { leads(filter: {contactId: $c}) { edges { node { id } } } }",
            {"c": their_contact["id"]},
        ),
        (
            "query($o: ID!) { leads(filter: {ownerId: $o}) { edges { node { id } } } }",
            {"o": other.user_id},
        ),
    ]
    for query, variables in checks:
        body = await gql(client, query, variables, token=owner.token)
        assert error_codes(body) == ["NOT_FOUND"], (query, variables, body)
    node = await gql(client, NODE, {"id": their_lead["id"]}, token=owner.token)
    assert node["data"]["node"] is None
    upsert = await gql(
        client,
        UPSERT,
        {
            "i": {
                "items": [
                    {"externalId": "f-1", "title": "A", "contactId": their_contact["id"]},
                    {"externalId": "f-2", "title": "B", "ownerId": other.user_id},
                ]
            }
        },
        token=owner.token,
    )
    results = upsert["data"]["upsertLeads"]["results"]
    assert [r["error"]["code"] for r in results] == ["NOT_FOUND", "NOT_FOUND"]
    assert await store_counts() == before


async def test_read_only_cannot_write(client, owner):
    lead = await create_lead(client, owner.token)
    reader = await add_member(client, owner, Role.READ_ONLY)
    before = await store_counts()
    for query, variables in [
        (CREATE, {"i": {"title": "Nope"}}),
        (UPDATE, {"i": {"id": lead["id"], "status": "CONTACTED"}}),
        (DELETE, {"i": {"id": lead["id"]}}),
        (UPSERT, {"i": {"items": [{"externalId": "r", "title": "Nope"}]}}),
    ]:
        assert error_codes(await gql(client, query, variables, token=reader.token)) == ["FORBIDDEN"]
    assert await store_counts() == before
    listed = await gql(client, "{ leads { edges { node { id } } } }", token=reader.token)
    assert [e["node"]["id"] for e in listed["data"]["leads"]["edges"]] == [lead["id"]]


async def test_upsert_leads(client, owner):
    await create_contact(client, owner.token, externalId="c-ext")
    items = [
        {"externalId": "l-1", "title": "One", "value": "100", "contactExternalId": "c-ext"},
        {"externalId": "l-2", "title": "Two", "status": "QUALIFIED"},
        {"externalId": "l-3", "title": "Three", "contactExternalId": "missing"},
        {"externalId": "l-4", "title": "Four", "currency": "ABC", "value": "-3"},
    ]
    body = await gql(client, UPSERT, {"i": {"items": items}}, token=owner.token)
    payload = body["data"]["upsertLeads"]
    assert [r["outcome"] for r in payload["results"]] == ["CREATED", "CREATED", "FAILED", "FAILED"]
    assert payload["results"][0]["lead"]["contact"]["id"]
    assert payload["results"][2]["error"]["code"] == "NOT_FOUND"
    assert {d["field"] for d in payload["results"][3]["error"]["details"]} == {"currency", "value"}

    # Re-run: unchanged. Then move through the pipeline; an illegal move fails alone.
    rerun = await gql(client, UPSERT, {"i": {"items": items[:2]}}, token=owner.token)
    assert rerun["data"]["upsertLeads"]["unchanged"] == 2
    moves = [
        {"externalId": "l-1", "status": "WON"},  # NEW → WON is not allowed
        {"externalId": "l-2", "status": "WON"},  # QUALIFIED → WON is
    ]
    body = await gql(client, UPSERT, {"i": {"items": moves}}, token=owner.token)
    results = body["data"]["upsertLeads"]["results"]
    assert [r["outcome"] for r in results] == ["FAILED", "UPDATED"]
    assert results[0]["error"]["details"][0]["field"] == "status"
    assert results[1]["lead"]["status"] == "WON"
    listed = await gql(
        client,
        "{ leads(filter: {status: [WON]}) { edges { node { title closedAt } } } }",
        token=owner.token,
    )
    edges = listed["data"]["leads"]["edges"]
    assert [e["node"]["title"] for e in edges] == ["Two"]
    assert edges[0]["node"]["closedAt"]


async def test_concurrent_lead_upserts_with_overlapping_new_external_ids(client, owner):
    """upsertLeads shares the contacts' engine: batches racing over the same new ids all
    succeed, and each id is created (with one `lead.created` event) exactly once."""
    from models.events import OutboxEvent
    from models.leads import Lead
    from schema.relay import decode_id

    tenant_id = decode_id(owner.org_id, "Organization")
    keys = [f"lead-race-{i}" for i in range(60)]

    def batch(b: int) -> list[dict[str, Any]]:
        mine = keys[b * 3 : b * 3 + 30]
        return [{"externalId": k, "title": f"{k} by {b}"} for k in (mine[::-1] if b % 2 else mine)]

    sent = (gql(client, UPSERT, {"i": {"items": batch(b)}}, token=owner.token) for b in range(11))
    bodies = await asyncio.gather(*sent)
    assert [b["errors"] for b in bodies if "errors" in b] == []
    created = [
        r["lead"]["id"]
        for body in bodies
        for r in body["data"]["upsertLeads"]["results"]
        if r["outcome"] == "CREATED"
    ]
    assert sum(body["data"]["upsertLeads"]["failed"] for body in bodies) == 0
    rows = await Lead.filter(tenant_id=tenant_id)
    assert sorted(r.external_id for r in rows) == sorted(keys)
    assert len(created) == len(set(created)) == len(keys)
    events = await OutboxEvent.filter(tenant_id=tenant_id, type="lead.created").count()
    assert events == len(keys)
