"""Tasks: CRUD, the one-link rule, completion, open tasks of contacts and leads, tenancy."""

from __future__ import annotations

from typing import Any

import httpx

from kit.roles import Role
from tests.conftest import error_codes, gql, register
from tests.contacts.test_contacts import add_member, create_contact, details
from tests.factories import store_counts
from tests.leads.test_leads import create_lead

TASK_FIELDS = (
    "id title description status dueAt completedAt assignee { id } lead { id } contact { id }"
)
CREATE = (
    f"""mutation($i: CreateTaskInput!) {{ createTask(input: $i) {{ task {{ {TASK_FIELDS} }} }} }}"""
)
UPDATE = (
    f"""mutation($i: UpdateTaskInput!) {{ updateTask(input: $i) {{ task {{ {TASK_FIELDS} }} }} }}"""
)
DELETE = "mutation($i: DeleteTaskInput!) { deleteTask(input: $i) { deletedId } }"
NODE = "query($id: ID!) { node(id: $id) { ... on Task { id title } } }"


async def create_task(client: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    body = await gql(client, CREATE, {"i": {"title": "Call back", **fields}}, token=token)
    assert "errors" not in body, body
    task: dict[str, Any] = body["data"]["createTask"]["task"]
    return task


async def test_create_complete_reopen_delete(client, owner):
    contact = await create_contact(client, owner.token)
    task = await create_task(
        client,
        owner.token,
        description="About the quote",
        assigneeId=owner.user_id,
        dueAt="2030-01-02T09:00:00+00:00",
        contactId=contact["id"],
    )
    assert task["status"] == "OPEN"
    assert task["assignee"]["id"] == owner.user_id
    assert task["contact"]["id"] == contact["id"]
    assert task["lead"] is None
    assert task["dueAt"].startswith("2030-01-02T09:00:00")

    done = await gql(client, UPDATE, {"i": {"id": task["id"], "status": "DONE"}}, token=owner.token)
    assert done["data"]["updateTask"]["task"]["completedAt"]
    reopened = await gql(
        client, UPDATE, {"i": {"id": task["id"], "status": "OPEN"}}, token=owner.token
    )
    assert reopened["data"]["updateTask"]["task"]["completedAt"] is None
    assert reopened["data"]["updateTask"]["task"]["description"] == "About the quote"

    assert (await gql(client, NODE, {"id": task["id"]}, token=owner.token))["data"]["node"]
    deleted = await gql(client, DELETE, {"i": {"id": task["id"]}}, token=owner.token)
    assert deleted["data"]["deleteTask"]["deletedId"] == task["id"]
    assert (await gql(client, NODE, {"id": task["id"]}, token=owner.token))["data"]["node"] is None


async def test_a_task_links_to_a_lead_or_a_contact_not_both(client, owner):
    contact = await create_contact(client, owner.token)
    lead = await create_lead(client, owner.token)
    before = await store_counts()
    both = await gql(
        client,
        CREATE,
        {"i": {"title": "T", "leadId": lead["id"], "contactId": contact["id"]}},
        token=owner.token,
    )
    assert error_codes(both) == ["BAD_USER_INPUT"]
    assert await store_counts() == before

    task = await create_task(client, owner.token, contactId=contact["id"])
    add_lead = await gql(
        client, UPDATE, {"i": {"id": task["id"], "leadId": lead["id"]}}, token=owner.token
    )
    assert error_codes(add_lead) == ["BAD_USER_INPUT"]
    assert "leadId" in details(add_lead)
    switched = await gql(
        client,
        UPDATE,
        {"i": {"id": task["id"], "leadId": lead["id"], "contactId": None}},
        token=owner.token,
    )
    moved = switched["data"]["updateTask"]["task"]
    assert (moved["lead"]["id"], moved["contact"]) == (lead["id"], None)


async def test_validation(client, owner):
    before = await store_counts()
    for fields, expected in [
        ({"title": ""}, {"title"}),
        ({"title": "x" * 201, "description": "d" * 10_001}, {"title", "description"}),
        ({"dueAt": "2030-01-02T09:00:00"}, {"dueAt"}),
    ]:
        body = await gql(client, CREATE, {"i": {"title": "T", **fields}}, token=owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        assert set(details(body)) == expected
    assert await store_counts() == before


async def test_open_tasks_of_contacts_and_leads(client, owner):
    contact = await create_contact(client, owner.token)
    lead = await create_lead(client, owner.token, contactId=contact["id"])
    await create_task(
        client, owner.token, title="later", contactId=contact["id"], dueAt="2031-01-01T00:00:00Z"
    )
    await create_task(client, owner.token, title="no date", contactId=contact["id"])
    await create_task(
        client, owner.token, title="sooner", contactId=contact["id"], dueAt="2030-01-01T00:00:00Z"
    )
    done = await create_task(client, owner.token, title="done", contactId=contact["id"])
    await gql(client, UPDATE, {"i": {"id": done["id"], "status": "DONE"}}, token=owner.token)
    await create_task(client, owner.token, title="for the lead", leadId=lead["id"])
    body = await gql(
        client,
        """{ contacts { edges { node { openTasks { title } } } }
             leads { edges { node { contact { id } openTasks { title contact { id } } } } } }""",
        token=owner.token,
    )
    contact_node = body["data"]["contacts"]["edges"][0]["node"]
    assert [t["title"] for t in contact_node["openTasks"]] == ["sooner", "later", "no date"]
    lead_node = body["data"]["leads"]["edges"][0]["node"]
    assert lead_node["contact"]["id"] == contact["id"]
    assert lead_node["openTasks"] == [{"title": "for the lead", "contact": None}]


async def test_foreign_tenant_ids_are_not_found(client, owner):
    other = await register(client, org="Foreign Tasks")
    their_contact = await create_contact(client, other.token)
    their_lead = await create_lead(client, other.token)
    their_task = await create_task(client, other.token)
    mine = await create_task(client, owner.token)
    before = await store_counts()
    checks: list[tuple[str, dict[str, Any]]] = [
        (UPDATE, {"i": {"id": their_task["id"], "title": "Stolen"}}),
        (DELETE, {"i": {"id": their_task["id"]}}),
    ]
    for field, value in [
        ("assigneeId", other.user_id),
        ("leadId", their_lead["id"]),
        ("contactId", their_contact["id"]),
    ]:
        checks.append((CREATE, {"i": {"title": "X", field: value}}))
        checks.append((UPDATE, {"i": {"id": mine["id"], field: value}}))
        checks.append(
            (
                f"query($v: ID!) {{ tasks(filter: {{{field}: $v}}) {{ edges {{ cursor }} }} }}",
                {"v": value},
            )
        )
    for query, variables in checks:
        body = await gql(client, query, variables, token=owner.token)
        assert error_codes(body) == ["NOT_FOUND"], (query, variables, body)
    assert (await gql(client, NODE, {"id": their_task["id"]}, token=owner.token))["data"][
        "node"
    ] is None
    assert await store_counts() == before


async def test_roles(client, owner):
    task = await create_task(client, owner.token)
    reader = await add_member(client, owner, Role.READ_ONLY)
    support = await add_member(client, owner, Role.SUPPORT)
    before = await store_counts()
    for query, variables in [
        (CREATE, {"i": {"title": "Nope"}}),
        (UPDATE, {"i": {"id": task["id"], "status": "DONE"}}),
        (DELETE, {"i": {"id": task["id"]}}),
    ]:
        assert error_codes(await gql(client, query, variables, token=reader.token)) == ["FORBIDDEN"]
    assert error_codes(
        await gql(client, DELETE, {"i": {"id": task["id"]}}, token=support.token)
    ) == ["FORBIDDEN"]
    assert await store_counts() == before
    # Support may take the task over.
    body = await gql(
        client,
        UPDATE,
        {"i": {"id": task["id"], "assigneeId": support.user_id, "status": "DONE"}},
        token=support.token,
    )
    assert body["data"]["updateTask"]["task"]["assignee"]["id"] == support.user_id
