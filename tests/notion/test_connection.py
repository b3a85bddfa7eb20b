"""connectNotion, notionDatabaseItems and createNotionPage over GraphQL, against the
gateway's own Notion sandbox over HTTP: the key checked with Notion and kept in the
vault (never returned), Notion's filters, sorts and cursors, and the abuse a user tries."""

from __future__ import annotations

import asyncio
import json

from kit.vault import vault_for
from models.notion import NotionConnection
from tests.conftest import error_codes, gql, register
from tests.credentials.test_credentials import member_token, tenant_id_of
from tests.notion.conftest import (
    CONNECT,
    CONNECTION,
    CREATE_PAGE,
    DB,
    DISCONNECT,
    ITEMS,
    KEY,
    Gateway,
)


def props(name: str, company: str = "", tags: tuple[str, ...] = ()) -> dict:
    return {
        "Name": {"title": [{"text": {"content": name}}]},
        "Company": {"rich_text": [{"text": {"content": company}}] if company else []},
        "Tags": {"multi_select": [{"name": t} for t in tags]},
    }


async def test_connect_checks_the_key_with_notion_and_never_returns_it(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    refused = await gateway.connect(owner, key="secret_invalid_" + "x" * 20)
    assert error_codes(refused) == ["BAD_USER_INPUT"], refused
    assert list(refused["errors"][0]["extensions"]["details"]) == ["apiKey"]
    unknown = await gateway.connect(owner, database="00000000-0000-4000-8000-000000000000")
    assert error_codes(unknown) == ["BAD_USER_INPUT"]
    assert list(unknown["errors"][0]["extensions"]["details"]) == ["databaseId"]
    for bad in ({"apiKey": "", "databaseId": DB}, {"apiKey": "a b\x00c", "databaseId": DB},
                {"apiKey": KEY, "databaseId": "not-a-database"},
                {"apiKey": "k" * 201, "databaseId": DB}):  # fmt: skip
        body = await gql(gateway.client, CONNECT, {"i": bad}, owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (bad, body)
    mine = NotionConnection.filter(tenant_id=tenant_id_of(owner))
    assert await mine.count() == 0  # nothing stored on a refusal

    made = await gateway.connect(owner, database=f"https://www.notion.so/x-{DB.replace('-', '')}")
    assert "errors" not in made, made
    connection = made["data"]["connectNotion"]["connection"]
    assert connection["databaseId"] == DB and connection["active"] is True
    assert connection["databaseTitle"] == "Contacts" and connection["keyHint"] == KEY[-4:]
    assert KEY not in json.dumps(made)
    row = await NotionConnection.get(tenant_id=tenant_id_of(owner))
    assert (
        KEY not in row.api_key
        and vault_for(gateway.settings.vault_keys).decrypt(row.api_key) == KEY
    )
    listed = await gql(gateway.client, CONNECTION, token=owner.token)
    assert listed["data"]["notionConnection"]["id"] == connection["id"]
    assert KEY not in json.dumps(listed)
    # Connecting again replaces it (one per person).
    again = await gateway.connect(owner)
    assert again["data"]["connectNotion"]["connection"]["id"] == connection["id"]
    assert await mine.count() == 1
    gone = await gql(gateway.client, DISCONNECT, token=owner.token)
    assert gone["data"]["disconnectNotion"]["disconnected"] is True
    assert (await gql(gateway.client, CONNECTION, token=owner.token))["data"][
        "notionConnection"
    ] is None


async def test_items_with_notions_filters_sorts_and_cursors(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    assert "errors" not in await gateway.connect(owner)
    for i, (company, tags) in enumerate(
        [("Acme", ("vip",)), ("Globex", ()), ("Acme Labs", ("vip", "eu")), ("Initech", ("eu",)),
         ("Acme", ())]
    ):  # fmt: skip
        page = {
            "properties": props(f"P{i}", company, tags),
            "content": "First paragraph.\n\nSecond.",
        }
        made = await gql(gateway.client, CREATE_PAGE, {"i": page}, owner.token)
        assert "errors" not in made, made
        assert made["data"]["createNotionPage"]["item"]["title"] == f"P{i}"
    page_id = made["data"]["createNotionPage"]["item"]["id"]
    blocks = next(iter(gateway.notion.workspaces.values())).children[page_id]
    assert [b["paragraph"]["rich_text"][0]["plain_text"] for b in blocks] == [
        "First paragraph.", "Second.",
    ]  # fmt: skip

    acme = {"property": "Company", "rich_text": {"contains": "acme"}}
    order = [{"property": "Name", "direction": "ascending"}]
    seen: list[str] = []
    after = None
    while True:
        body = await gql(gateway.client, ITEMS, {"f": acme, "s": order, "first": 2,
                                                 "after": after}, owner.token)  # fmt: skip
        assert "errors" not in body, body
        conn = body["data"]["notionDatabaseItems"]
        seen += [e["node"]["title"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert seen == ["P0", "P2", "P4"]
    # A cursor in the middle of a page resumes right after its item.
    body = await gql(gateway.client, ITEMS, {"s": order, "first": 3}, owner.token)
    middle = body["data"]["notionDatabaseItems"]["edges"][0]["cursor"]
    body = await gql(gateway.client, ITEMS, {"s": order, "first": 2, "after": middle},
                     owner.token)  # fmt: skip
    assert [e["node"]["title"] for e in body["data"]["notionDatabaseItems"]["edges"]] == [
        "P1", "P2",
    ]  # fmt: skip
    both = {"and": [{"property": "Tags", "multi_select": {"contains": "vip"}},
                    {"property": "Tags", "multi_select": {"contains": "eu"}}]}  # fmt: skip
    body = await gql(gateway.client, ITEMS, {"f": both}, owner.token)
    assert [e["node"]["title"] for e in body["data"]["notionDatabaseItems"]["edges"]] == ["P2"]
    props_seen = body["data"]["notionDatabaseItems"]["edges"][0]["node"]["properties"]
    assert props_seen["Company"]["rich_text"][0]["plain_text"] == "Acme Labs"


async def test_malformed_filters_and_properties_are_bad_input(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    assert "errors" not in await gateway.connect(owner)
    cases = [
        ({"f": '{"property": "Name", '}, "filter"),  # malformed JSON (sent as a string)
        ({"f": ["not", "an", "object"]}, "filter"),
        ({"f": {"property": "Name", "title": {"resembles": "x"}}}, "filter"),  # Notion says no
        ({"f": {"property": "Nope", "rich_text": {"equals": "x"}}}, "filter"),
        ({"s": {"property": "Name"}}, "sorts"),
        ({"f": {"property": "Name", "title": {"equals": "x" * 20000}}}, "filter"),  # too large
        ({"first": 101}, "first"),
        ({"after": "garbage!"}, "after"),
    ]
    for variables, field in cases:
        body = await gql(gateway.client, ITEMS, variables, owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (variables, body)
        assert field in body["errors"][0]["extensions"]["details"], (variables, body)
    # NUL bytes are refused at the edge, before anything reaches Notion.
    nul = {"f": {"property": "Name", "title": {"equals": "a\x00b"}}}
    assert error_codes(await gql(gateway.client, ITEMS, nul, owner.token)) == ["BAD_USER_INPUT"]
    for properties in ({}, {"Nope": {"title": []}}, {"Name": {"title": [{"text": {
            "content": "x" * 2001}}]}}, "not json"):  # fmt: skip
        body = await gql(gateway.client, CREATE_PAGE, {"i": {"properties": properties}},
                         owner.token)  # fmt: skip
        assert error_codes(body) == ["BAD_USER_INPUT"], (properties, body)
    assert gateway.pages() == []


async def test_roles_people_and_tenants(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    assert "errors" not in await gateway.connect(owner)
    read_only, _ = await member_token(gateway.settings, owner, "READ_ONLY")
    for query in (CONNECTION, ITEMS):
        assert error_codes(await gql(gateway.client, query, token=read_only)) == ["FORBIDDEN"]
    body = await gql(gateway.client, CONNECT, {"i": {"apiKey": KEY, "databaseId": DB}}, read_only)
    assert error_codes(body) == ["FORBIDDEN"]
    # Another member of the same organization has no connection of their own, and does
    # not reach the owner's.
    support, _ = await member_token(gateway.settings, owner, "SUPPORT")
    assert (await gql(gateway.client, CONNECTION, token=support))["data"][
        "notionConnection"
    ] is None
    assert error_codes(await gql(gateway.client, ITEMS, token=support)) == ["NOT_FOUND"]
    assert (
        error_codes(await gql(gateway.client, DISCONNECT, token=support)) == []
        and await NotionConnection.filter(tenant_id=tenant_id_of(owner)).count() == 1
    )
    other = await register(gateway.client, org="Other")
    assert (await gql(gateway.client, CONNECTION, token=other.token))["data"][
        "notionConnection"
    ] is None


async def test_a_refused_key_makes_the_connection_inactive(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    assert "errors" not in await gateway.connect(owner)
    gateway.notion.faults.clear()
    from providers.sandbox.base import Fault

    gateway.notion.faults.append(Fault(status=401, count=1))  # the key was revoked
    body = await gql(gateway.client, ITEMS, {}, owner.token)
    assert error_codes(body) == ["UPSTREAM_UNAVAILABLE"], body
    state = (await gql(gateway.client, CONNECTION, token=owner.token))["data"]["notionConnection"]
    assert state["active"] is False and "unauthorized" in state["inactiveReason"]
    body = await gql(gateway.client, ITEMS, {}, owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]  # inactive: connect again
    assert "errors" not in await gateway.connect(owner)
    assert "errors" not in await gql(gateway.client, ITEMS, {}, owner.token)


async def test_two_racing_connects_leave_one_connection(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    first, second = await asyncio.gather(gateway.connect(owner), gateway.connect(owner))
    assert "errors" not in first and "errors" not in second, (first, second)
    ids = {b["data"]["connectNotion"]["connection"]["id"] for b in (first, second)}
    assert len(ids) == 1
    assert await NotionConnection.filter(tenant_id=tenant_id_of(owner)).count() == 1
