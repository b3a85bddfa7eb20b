"""Contacts: CRUD, validation, tenancy, roles, batch upserts."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from kit.roles import Role
from kit.security import hash_password
from models.accounts import User
from models.members import Membership
from resolvers.crm import global_id
from schema.relay import decode_id
from tests.conftest import STRONG_PASSWORD, Account, error_codes, gql, register
from tests.factories import store_counts

CONTACT_FIELDS = "id name email phone company notes externalId owner { id name } createdAt"
CREATE = f"""mutation($i: CreateContactInput!) {{
  createContact(input: $i) {{ contact {{ {CONTACT_FIELDS} }} }} }}"""
UPDATE = f"""mutation($i: UpdateContactInput!) {{
  updateContact(input: $i) {{ contact {{ {CONTACT_FIELDS} }} }} }}"""
DELETE = "mutation($i: DeleteContactInput!) { deleteContact(input: $i) { deletedId } }"
NODE = "query($id: ID!) { node(id: $id) { ... on Contact { id name } } }"
UPSERT = """mutation($i: UpsertContactsInput!) {
  upsertContacts(input: $i) {
    created updated unchanged failed
    results {
      index externalId outcome
      contact { id name email owner { id } updatedAt }
      error { code message details { field message } }
    }
  }
}"""


@dataclass
class Member:
    token: str
    user_id: str


async def add_member(client: httpx.AsyncClient, owner: Account, role: Role) -> Member:
    """A user with `role` in the owner's organization, signed in through the API."""
    tenant_id = decode_id(owner.org_id, "Organization")
    email = f"{role.value.lower()}-{uuid.uuid4().hex[:10]}@example.com"
    user = await User.create(
        email=email,
        name=f"{role.value.title()} Member",
        password_hash=hash_password(STRONG_PASSWORD),
    )
    await Membership.create(user_id=user.id, tenant_id=tenant_id, role=role.value)
    body = await gql(
        client,
        "mutation($i: LoginInput!) { login(input: $i) { accessToken user { id } } }",
        {"i": {"email": email, "password": STRONG_PASSWORD, "organizationId": owner.org_id}},
    )
    assert "errors" not in body, body
    return Member(body["data"]["login"]["accessToken"], body["data"]["login"]["user"]["id"])


async def create_contact(client: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    body = await gql(client, CREATE, {"i": {"name": "Ada Lovelace", **fields}}, token=token)
    assert "errors" not in body, body
    contact: dict[str, Any] = body["data"]["createContact"]["contact"]
    return contact


def details(body: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = body["errors"][0]["extensions"].get("details") or {}
    return result


async def test_create_read_update_delete(client, owner):
    made = await create_contact(
        client,
        owner.token,
        email="Ada@Example.COM",
        phone="+44 20 7946 0958",
        company="Analytical Engines",
        notes="Met at the Royal Society.",
        ownerId=owner.user_id,
        externalId="hub-1",
    )
    assert made["email"] == "ada@example.com"
    assert made["owner"]["id"] == owner.user_id
    assert made["externalId"] == "hub-1"

    fetched = await gql(client, NODE, {"id": made["id"]}, token=owner.token)
    assert fetched["data"]["node"] == {"id": made["id"], "name": "Ada Lovelace"}

    changed = await gql(
        client,
        UPDATE,
        {"i": {"id": made["id"], "name": "Ada King", "ownerId": None}},
        token=owner.token,
    )
    contact = changed["data"]["updateContact"]["contact"]
    assert contact["name"] == "Ada King"
    assert contact["owner"] is None
    assert contact["company"] == "Analytical Engines"  # omitted fields stay

    deleted = await gql(client, DELETE, {"i": {"id": made["id"]}}, token=owner.token)
    assert deleted["data"]["deleteContact"]["deletedId"] == made["id"]
    gone = await gql(client, NODE, {"id": made["id"]}, token=owner.token)
    assert gone["data"]["node"] is None
    again = await gql(client, DELETE, {"i": {"id": made["id"]}}, token=owner.token)
    assert error_codes(again) == ["NOT_FOUND"]


async def test_validation_reports_every_field_and_changes_nothing(client, owner):
    before = await store_counts()
    body = await gql(
        client,
        CREATE,
        {
            "i": {
                "name": "x" * 201,
                "email": "not-an-email",
                "phone": "call me maybe",
                "notes": "n" * 10_001,
                "externalId": "   ",
            }
        },
        token=owner.token,
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert set(details(body)) == {"name", "email", "phone", "notes", "externalId"}
    assert await store_counts() == before

    made = await create_contact(client, owner.token)
    before = await store_counts()
    bad_updates: list[tuple[dict[str, Any], str]] = [
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"email": "a@b"}, "email"),
    ]
    for bad, field in bad_updates:
        body = await gql(client, UPDATE, {"i": {"id": made["id"], **bad}}, token=owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], bad
        assert field in details(body)
    assert await store_counts() == before


async def test_external_id_is_unique_per_tenant(client, owner):
    await create_contact(client, owner.token, externalId="dup-1")
    body = await gql(client, CREATE, {"i": {"name": "B", "externalId": "dup-1"}}, token=owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "externalId" in details(body)
    other = await register(client, org="Elsewhere")
    await create_contact(client, other.token, externalId="dup-1")  # another tenant: fine


async def test_foreign_tenant_ids_are_not_found(client, owner):
    other = await register(client, org="Foreign")
    theirs = await create_contact(client, other.token)
    mine = await create_contact(client, owner.token)
    before = await store_counts()
    checks = [
        (NODE, {"id": theirs["id"]}),
        (UPDATE, {"i": {"id": theirs["id"], "name": "Stolen"}}),
        (DELETE, {"i": {"id": theirs["id"]}}),
        (CREATE, {"i": {"name": "X", "ownerId": other.user_id}}),
        (UPDATE, {"i": {"id": mine["id"], "ownerId": other.user_id}}),
        (
            "query($o: ID!) { contacts(filter: {ownerId: $o}) { edges { node { id } } } }",
            {"o": other.user_id},
        ),
    ]
    for query, variables in checks:
        body = await gql(client, query, variables, token=owner.token)
        if query == NODE:
            assert body["data"]["node"] is None
        else:
            assert error_codes(body) == ["NOT_FOUND"], (query, body)
    assert await store_counts() == before
    # A Lead id where a Contact id belongs is not found either.
    body = await gql(client, DELETE, {"i": {"id": owner.org_id}}, token=owner.token)
    assert error_codes(body) == ["NOT_FOUND"]


async def test_roles(client, owner):
    made = await create_contact(client, owner.token)
    reader = await add_member(client, owner, Role.READ_ONLY)
    support = await add_member(client, owner, Role.SUPPORT)
    before = await store_counts()
    listing = await gql(client, "{ contacts { edges { node { id } } } }", token=reader.token)
    assert listing["data"]["contacts"]["edges"]
    for query, variables in [
        (CREATE, {"i": {"name": "Nope"}}),
        (UPDATE, {"i": {"id": made["id"], "name": "Nope"}}),
        (DELETE, {"i": {"id": made["id"]}}),
        (UPSERT, {"i": {"items": [{"externalId": "r-1", "name": "Nope"}]}}),
    ]:
        body = await gql(client, query, variables, token=reader.token)
        assert error_codes(body) == ["FORBIDDEN"], body
    # SUPPORT writes but neither deletes nor syncs.
    assert error_codes(
        await gql(client, DELETE, {"i": {"id": made["id"]}}, token=support.token)
    ) == ["FORBIDDEN"]
    sync = {"i": {"items": [{"externalId": "s-1", "name": "Nope"}]}}
    assert error_codes(await gql(client, UPSERT, sync, token=support.token)) == ["FORBIDDEN"]
    assert await store_counts() == before
    assert "errors" not in await gql(
        client, UPDATE, {"i": {"id": made["id"], "ownerId": support.user_id}}, token=support.token
    )
    anonymous = await gql(client, "{ contacts { edges { node { id } } } }")
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]


async def test_owner_may_be_any_member(client, owner):
    support = await add_member(client, owner, Role.SUPPORT)
    made = await create_contact(client, owner.token, ownerId=support.user_id)
    assert made["owner"] == {"id": support.user_id, "name": "Support Member"}


# Upserts ------------------------------------------------------------------------------


async def test_upsert_mixed_batch_and_idempotent_rerun(client, owner):
    other = await register(client, org="Not Yours")
    await create_contact(client, owner.token, externalId="u-existing", name="Old Name")
    items = [
        {"externalId": "u-1", "name": "One", "email": "one@example.com", "ownerId": owner.user_id},
        {"externalId": "u-2", "name": "Two", "email": "broken"},
        {"externalId": "u-existing", "name": "New Name"},
        {"externalId": "u-3"},  # new, but no name
        {"externalId": "u-4", "name": "Four", "ownerId": other.user_id},
        {"externalId": "u-1", "name": "One again"},
        {"externalId": "u-5", "name": "Five", "ownerId": owner.org_id},  # not a User id
        {"externalId": " ", "name": "Blank key"},
    ]
    body = await gql(client, UPSERT, {"i": {"items": items}}, token=owner.token)
    assert "errors" not in body, body
    payload = body["data"]["upsertContacts"]
    results = payload["results"]
    assert [r["outcome"] for r in results] == [
        "CREATED",
        "FAILED",
        "UPDATED",
        "FAILED",
        "FAILED",
        "FAILED",
        "FAILED",
        "FAILED",
    ]
    assert (payload["created"], payload["updated"], payload["failed"]) == (1, 1, 6)
    assert [r["index"] for r in results] == list(range(len(items)))
    assert results[0]["contact"]["owner"] == {"id": owner.user_id}
    assert results[0]["contact"]["id"]
    assert results[2]["contact"]["name"] == "New Name"

    def problem(i: int) -> tuple[str, set[str]]:
        error = results[i]["error"]
        return error["code"], {d["field"] for d in error["details"]}

    assert problem(1) == ("BAD_USER_INPUT", {"email"})
    assert problem(3) == ("BAD_USER_INPUT", {"name"})
    assert problem(4) == ("NOT_FOUND", {"ownerId"})
    assert problem(5) == ("BAD_USER_INPUT", {"externalId"})
    assert problem(6)[0] == "NOT_FOUND", results[6]["error"]
    assert problem(7) == ("BAD_USER_INPUT", {"externalId"})
    assert all(results[i]["contact"] is None for i in (1, 3, 4, 5, 6, 7))

    # Re-running the good items changes nothing.
    good = [items[0], items[2]]
    before = await store_counts()
    rerun = await gql(client, UPSERT, {"i": {"items": good}}, token=owner.token)
    again = rerun["data"]["upsertContacts"]
    assert [r["outcome"] for r in again["results"]] == ["UNCHANGED", "UNCHANGED"]
    assert again["results"][0]["contact"]["updatedAt"] == results[0]["contact"]["updatedAt"]
    assert await store_counts() == before

    listed = await gql(
        client, "{ contacts(first: 100) { edges { node { externalId name } } } }", token=owner.token
    )
    names = {
        e["node"]["externalId"]: e["node"]["name"] for e in listed["data"]["contacts"]["edges"]
    }
    assert names == {"u-existing": "New Name", "u-1": "One"}


async def test_upsert_limit_and_full_batch(client, owner):
    before = await store_counts()
    too_many = [{"externalId": f"b-{i}", "name": f"N{i}"} for i in range(501)]
    body = await gql(client, UPSERT, {"i": {"items": too_many}}, token=owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "items" in details(body)
    assert await store_counts() == before

    batch = too_many[:500]
    body = await gql(client, UPSERT, {"i": {"items": batch}}, token=owner.token)
    assert body["data"]["upsertContacts"]["created"] == 500
    ids = {r["contact"]["id"] for r in body["data"]["upsertContacts"]["results"]}
    assert len(ids) == 500
    # Half of them change: 250 updates, 250 unchanged.
    changed = [
        {**item, "name": item["name"] + "!"} if i % 2 else item for i, item in enumerate(batch)
    ]
    body = await gql(client, UPSERT, {"i": {"items": changed}}, token=owner.token)
    payload = body["data"]["upsertContacts"]
    assert (payload["created"], payload["updated"], payload["unchanged"]) == (0, 250, 250)
    assert payload["results"][1]["contact"]["name"] == "N1!"
    assert {r["contact"]["id"] for r in payload["results"]} == ids


async def test_concurrent_upserts_with_overlapping_new_external_ids(client, owner):
    """Twenty batches of fifty items, each sharing its new external ids with its
    neighbours (every id is in up to five batches), sent at once: no batch fails, every
    id exists once, exactly one CREATED (and one `contact.created` event) per id across
    all batches, and each row holds one writer's values."""
    from models.contacts import Contact
    from models.events import OutboxEvent

    tenant_id = decode_id(owner.org_id, "Organization")
    batches, size, step = 20, 50, 10
    all_keys = [f"race-{i}" for i in range((batches - 1) * step + size)]

    def item(key: str, writer: int) -> dict[str, Any]:
        return {
            "externalId": key,
            "name": f"{key} by {writer}",
            "email": f"w{writer}-{key}@example.com",
            "company": f"Writer {writer}",
        }

    def batch(b: int) -> list[dict[str, Any]]:
        keys = all_keys[b * step : b * step + size]
        if b % 2:
            keys.reverse()  # the same ids in the other order
        return [item(key, b) for key in keys]

    sent = (
        gql(client, UPSERT, {"i": {"items": batch(b)}}, token=owner.token) for b in range(batches)
    )
    bodies = await asyncio.gather(*sent)
    assert [b["errors"] for b in bodies if "errors" in b] == []
    outcomes: dict[str, list[str]] = {}
    for body in bodies:
        payload = body["data"]["upsertContacts"]
        assert payload["failed"] == 0
        for result in payload["results"]:
            outcomes.setdefault(result["externalId"], []).append(result["outcome"])
    assert set(outcomes) == set(all_keys)
    for key in all_keys:
        assert outcomes[key].count("CREATED") == 1, (key, outcomes[key])
        assert set(outcomes[key]) <= {"CREATED", "UPDATED", "UNCHANGED"}

    rows = await Contact.filter(tenant_id=tenant_id, external_id__in=all_keys)
    assert sorted(r.external_id for r in rows) == sorted(all_keys)  # each exactly once
    for row in rows:
        writer = int(row.company.removeprefix("Writer "))
        assert (row.name, row.email) == (
            f"{row.external_id} by {writer}",
            f"w{writer}-{row.external_id}@example.com",
        )
    created = await OutboxEvent.filter(tenant_id=tenant_id, type="contact.created")
    assert len(created) == len(all_keys)
    assert {e.data["id"] for e in created} == {global_id("Contact", r.id) for r in rows}
