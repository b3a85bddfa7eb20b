"""CRM lists: filters, ordering, keyset pagination across pages, and SQL statement counts."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import httpx
from tortoise.connection import get_connection

from kit.roles import Role
from tests.conftest import Account, error_codes, gql
from tests.contacts.test_contacts import UPSERT as UPSERT_CONTACTS
from tests.contacts.test_contacts import add_member, create_contact
from tests.leads.test_leads import create_lead
from tests.tasks.test_tasks import create_task

COUNTED = ("execute_query", "execute_query_dict", "execute_insert", "execute_many")


@contextlib.contextmanager
def count_statements() -> Iterator[list[str]]:
    """Record every SQL statement the default connection runs while the block runs.

    A measurement hook, not a mock: the wrapped methods still run the queries.
    """
    cls = type(get_connection("default"))
    seen: list[str] = []
    depth = 0
    originals = {name: getattr(cls, name) for name in COUNTED}

    def wrap(original: Any) -> Any:
        @functools.wraps(original)
        async def counted(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            if depth == 0:
                seen.append(query)
            depth += 1
            try:
                return await original(self, query, *args, **kwargs)
            finally:
                depth -= 1

        return counted

    for name, original in originals.items():
        setattr(cls, name, wrap(original))
    try:
        yield seen
    finally:
        for name, original in originals.items():
            setattr(cls, name, original)


def ids(body: dict[str, Any], field: str) -> list[str]:
    assert "errors" not in body, body
    return [edge["node"]["id"] for edge in body["data"][field]["edges"]]


async def all_pages(
    client: httpx.AsyncClient, token: str, field: str, args: str, first: int
) -> list[dict[str, Any]]:
    query = f"""query($after: String) {{
      {field}(first: {first}, after: $after{", " + args if args else ""}) {{
        edges {{ cursor node {{ id }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""
    nodes: list[dict[str, Any]] = []
    after = None
    for _ in range(100):
        body = await gql(client, query, {"after": after}, token=token)
        assert "errors" not in body, body
        conn = body["data"][field]
        nodes.extend(edge["node"] for edge in conn["edges"])
        if not conn["pageInfo"]["hasNextPage"]:
            return nodes
        after = conn["pageInfo"]["endCursor"]
    raise AssertionError("pagination did not end")


CONTACTS_WITH_RELATIONS = """query($first: Int!) {
  contacts(first: $first) {
    edges { node { name owner { name } openTasks { title } } }
  }
}"""


async def _seed_contacts(client: httpx.AsyncClient, owner: Account, n: int, start: int) -> None:
    items = [
        {"externalId": f"seed-{i}", "name": f"Seed {i:03}", "ownerId": owner.user_id}
        for i in range(start, start + n)
    ]
    body = await gql(client, UPSERT_CONTACTS, {"i": {"items": items}}, token=owner.token)
    assert body["data"]["upsertContacts"]["created"] == n, body
    for result in body["data"]["upsertContacts"]["results"][:5]:
        contact_id = result["contact"]["id"]
        await create_task(client, owner.token, title="first", contactId=contact_id)
        await create_task(client, owner.token, title="second", contactId=contact_id)


async def test_contacts_with_owner_and_open_tasks_cost_constant_statements(client, owner):
    await _seed_contacts(client, owner, 5, 0)
    with count_statements() as small:
        body = await gql(client, CONTACTS_WITH_RELATIONS, {"first": 5}, token=owner.token)
    edges = body["data"]["contacts"]["edges"]
    assert len(edges) == 5
    assert all(e["node"]["owner"]["name"] == "Owner" for e in edges)
    assert all(len(e["node"]["openTasks"]) == 2 for e in edges)

    await _seed_contacts(client, owner, 95, 5)
    with count_statements() as large:
        body = await gql(client, CONTACTS_WITH_RELATIONS, {"first": 100}, token=owner.token)
    assert len(body["data"]["contacts"]["edges"]) == 100
    assert len(large) <= 3, large
    assert len(large) == len(small), (small, large)


async def test_contact_filters_and_ordering(client, owner):
    support = await add_member(client, owner, Role.SUPPORT)
    a = await create_contact(client, owner.token, name="Zed Alpha", email="zed@acme.io")
    b = await create_contact(client, owner.token, name="amy Beta", company="ACME Corp")
    c = await create_contact(client, owner.token, name="Carl", ownerId=support.user_id)
    d = await create_contact(client, owner.token, name="Bea", email="bea@example.com")

    def query(args: str) -> str:
        return f"{{ contacts({args}) {{ edges {{ node {{ id }} }} }} }}"

    async def run(args: str) -> list[str]:
        return ids(await gql(client, query(args), token=owner.token), "contacts")

    assert await run('filter: {search: "acme"}') == [a["id"], b["id"]]
    assert await run('filter: {search: "  "}') == [a["id"], b["id"], c["id"], d["id"]]
    assert await run(f'filter: {{ownerId: "{support.user_id}"}}') == [c["id"]]
    assert await run(f'filter: {{search: "bea", ownerId: "{support.user_id}"}}') == []
    by_name = await run("orderBy: {field: NAME}")
    assert by_name == [b["id"], d["id"], c["id"], a["id"]] or by_name == [
        d["id"],
        c["id"],
        a["id"],
        b["id"],
    ]  # "amy" sorts first case-insensitively (PostgreSQL collations) or last (SQLite binary)
    assert await run("orderBy: {field: CREATED_AT, direction: DESC}") == [
        d["id"],
        c["id"],
        b["id"],
        a["id"],
    ]


async def test_pagination_across_pages_in_every_order(client, owner):
    for i in range(7):
        # Equal names in pairs: ties must break by id without losing or repeating rows.
        await create_contact(client, owner.token, name=f"Name {i // 2}")
    every = await all_pages(client, owner.token, "contacts", "", 100)
    assert len(every) == 7
    for args in [
        "",
        "orderBy: {field: NAME}",
        "orderBy: {field: NAME, direction: DESC}",
        "orderBy: {field: CREATED_AT, direction: DESC}",
        "orderBy: {field: UPDATED_AT}",
    ]:
        paged = await all_pages(client, owner.token, "contacts", args, 2)
        one_go = await all_pages(client, owner.token, "contacts", args, 100)
        assert paged == one_go, args
        assert sorted(n["id"] for n in paged) == sorted(n["id"] for n in every)


async def test_page_size_and_cursor_errors(client, owner):
    await create_contact(client, owner.token)
    too_big = await gql(client, "{ contacts(first: 101) { edges { cursor } } }", token=owner.token)
    assert error_codes(too_big) == ["BAD_USER_INPUT"]
    bad_cursor = await gql(
        client, '{ leads(after: "bm90IGEgY3Vyc29y") { edges { cursor } } }', token=owner.token
    )
    assert error_codes(bad_cursor) == ["BAD_USER_INPUT"]
    long_search = await gql(
        client,
        "query($s: String) { contacts(filter: {search: $s}) { edges { cursor } } }",
        {"s": "x" * 201},
        token=owner.token,
    )
    assert error_codes(long_search) == ["BAD_USER_INPUT"]


async def test_lead_filters_ordering_and_pages(client, owner):
    support = await add_member(client, owner, Role.SUPPORT)
    contact = await create_contact(client, owner.token)
    small = await create_lead(client, owner.token, value="10", source="web")
    big = await create_lead(
        client, owner.token, value="5000", source="referral", contactId=contact["id"]
    )
    mid = await create_lead(
        client, owner.token, value="300", source="web", ownerId=support.user_id, status="QUALIFIED"
    )
    lost = await create_lead(client, owner.token, value="300", status="LOST")

    async def run(args: str) -> list[str]:
        body = await gql(
            client, f"{{ leads({args}) {{ edges {{ node {{ id }} }} }} }}", token=owner.token
        )
        return ids(body, "leads")

    assert await run("filter: {status: [NEW]}") == [small["id"], big["id"]]
    assert await run("filter: {status: [QUALIFIED, LOST]}") == [mid["id"], lost["id"]]
    assert await run('filter: {source: "web"}') == [small["id"], mid["id"]]
    assert await run(f'filter: {{contactId: "{contact["id"]}"}}') == [big["id"]]
    assert await run(f'filter: {{ownerId: "{support.user_id}"}}') == [mid["id"]]
    # Ties (mid, lost: 300 each) break by id, in the same direction.
    assert await run("orderBy: {field: VALUE, direction: DESC}") == [
        big["id"],
        lost["id"],
        mid["id"],
        small["id"],
    ]
    paged = await all_pages(client, owner.token, "leads", "orderBy: {field: VALUE}", 1)
    assert [n["id"] for n in paged] == [small["id"], mid["id"], lost["id"], big["id"]]


async def test_task_filters_and_pages(client, owner):
    support = await add_member(client, owner, Role.SUPPORT)
    contact = await create_contact(client, owner.token)
    lead = await create_lead(client, owner.token)
    early = await create_task(client, owner.token, dueAt="2030-01-01T00:00:00Z", leadId=lead["id"])
    late = await create_task(
        client,
        owner.token,
        dueAt="2030-06-01T00:00:00Z",
        contactId=contact["id"],
        assigneeId=support.user_id,
    )
    undated = await create_task(client, owner.token, status="CANCELLED")

    async def run(args: str) -> list[str]:
        body = await gql(
            client, f"{{ tasks({args}) {{ edges {{ node {{ id }} }} }} }}", token=owner.token
        )
        return ids(body, "tasks")

    assert await run("filter: {status: [OPEN]}") == [early["id"], late["id"]]
    assert await run("filter: {status: [CANCELLED, DONE]}") == [undated["id"]]
    assert await run(f'filter: {{assigneeId: "{support.user_id}"}}') == [late["id"]]
    assert await run('filter: {dueBefore: "2030-03-01T00:00:00Z"}') == [early["id"]]
    assert await run('filter: {dueAfter: "2030-03-01T00:00:00Z"}') == [late["id"]]
    assert await run(f'filter: {{leadId: "{lead["id"]}"}}') == [early["id"]]
    assert await run(f'filter: {{contactId: "{contact["id"]}"}}') == [late["id"]]
    assert await run("orderBy: {field: CREATED_AT, direction: DESC}") == [
        undated["id"],
        late["id"],
        early["id"],
    ]
    paged = await all_pages(client, owner.token, "tasks", "", 2)
    assert [n["id"] for n in paged] == [early["id"], late["id"], undated["id"]]


CONTACTS_THROUGH_FRAGMENTS = """query($first: Int!) {
  contacts(first: $first) { edges { node { ...C } } }
  leads { edges { node { contact { name owner { name } openTasks { title } } } } }
}
fragment C on Contact { name ... on Contact { owner { name } } openTasks { title } }"""


async def test_relations_through_fragments_and_other_paths_agree(client, owner):
    """The page loads owner/openTasks with the contacts when selected (also through
    fragments); contacts reached another way (a lead's contact) load them on demand."""
    await _seed_contacts(client, owner, 5, 0)
    first = (await gql(client, CONTACTS_WITH_RELATIONS, {"first": 5}, token=owner.token))["data"]
    contact_id = (
        await gql(client, "{ contacts(first: 1) { edges { node { id } } } }", token=owner.token)
    )["data"]["contacts"]["edges"][0]["node"]["id"]
    await create_lead(client, owner.token, contactId=contact_id)
    with count_statements() as seen:
        body = await gql(client, CONTACTS_THROUGH_FRAGMENTS, {"first": 5}, token=owner.token)
    assert "errors" not in body, body
    assert body["data"]["contacts"] == first["contacts"]
    via_lead = body["data"]["leads"]["edges"][0]["node"]["contact"]
    assert via_lead == first["contacts"]["edges"][0]["node"]
    # contacts page + owners + open tasks; leads page + their contacts (owners and open
    # tasks of those come from the request's loader caches or one batch each).
    assert len(seen) <= 7, seen
