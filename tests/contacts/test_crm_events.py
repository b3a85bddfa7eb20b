"""CRM domain events: written in the same transaction as the change (transactional outbox).

Each mutation leaves exactly its events in the outbox; a refused or rolled-back write
leaves none.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx

from models.contacts import Contact
from models.events import OutboxEvent
from models.leads import Lead
from schema.relay import decode_id
from tests.conftest import Account, error_codes, gql
from tests.contacts.test_contacts import CREATE as CREATE_CONTACT
from tests.contacts.test_contacts import DELETE as DELETE_CONTACT
from tests.contacts.test_contacts import UPDATE as UPDATE_CONTACT
from tests.contacts.test_contacts import UPSERT as UPSERT_CONTACTS
from tests.contacts.test_contacts import create_contact
from tests.leads.test_leads import DELETE as DELETE_LEAD
from tests.leads.test_leads import UPDATE as UPDATE_LEAD
from tests.leads.test_leads import UPSERT as UPSERT_LEADS
from tests.leads.test_leads import create_lead, move
from tests.tasks.test_tasks import CREATE as CREATE_TASK
from tests.tasks.test_tasks import DELETE as DELETE_TASK
from tests.tasks.test_tasks import UPDATE as UPDATE_TASK
from tests.tasks.test_tasks import create_task


class Outbox:
    """The tenant's CRM events, read from the outbox table; `new()` returns those since the
    last call."""

    def __init__(self, owner: Account) -> None:
        self.tenant_id = decode_id(owner.org_id, "Organization")
        self.seen = 0

    async def all(self) -> list[tuple[str, dict[str, Any]]]:
        rows = await OutboxEvent.filter(tenant_id=self.tenant_id).order_by("id")
        return [(r.type, r.data) for r in rows if r.type.split(".")[0] in CRM_AREAS]

    async def new(self) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.all()
        fresh, self.seen = rows[self.seen :], len(rows)
        return fresh


CRM_AREAS = {"contact", "lead", "task"}


async def ok(client: httpx.AsyncClient, owner: Account, query: str, i: dict[str, Any]) -> dict:
    body = await gql(client, query, {"i": i}, token=owner.token)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def test_every_mutation_emits_its_events(client, owner):
    outbox = Outbox(owner)
    contact = await create_contact(client, owner.token, name="Ada", email="ada@example.com")
    cid = contact["id"]
    assert await outbox.new() == [("contact.created", {"id": cid})]

    await ok(client, owner, UPDATE_CONTACT, {"id": cid, "name": "Ada L", "ownerId": None})
    # ownerId was already null: only the name changed.
    assert await outbox.new() == [("contact.updated", {"id": cid, "fields": ["name"]})]
    await ok(client, owner, UPDATE_CONTACT, {"id": cid, "email": "ADA@example.com "})
    assert await outbox.new() == []  # normalises to the stored value: nothing changed

    lead = await create_lead(client, owner.token, contactId=cid)
    lid = lead["id"]
    assert await outbox.new() == [("lead.created", {"id": lid, "status": "NEW"})]
    await ok(client, owner, UPDATE_LEAD, {"id": lid, "status": "QUALIFIED", "value": "12.50"})
    assert await outbox.new() == [
        ("lead.status_changed", {"id": lid, "from": "NEW", "to": "QUALIFIED"}),
        ("lead.updated", {"id": lid, "fields": ["value"]}),
    ]
    await ok(client, owner, UPDATE_LEAD, {"id": lid, "status": "WON"})
    assert await outbox.new() == [
        ("lead.status_changed", {"id": lid, "from": "QUALIFIED", "to": "WON"})
    ]

    task = await create_task(client, owner.token, leadId=lid)
    tid = task["id"]
    assert await outbox.new() == [("task.created", {"id": tid})]
    await ok(client, owner, UPDATE_TASK, {"id": tid, "title": "Call again"})
    assert await outbox.new() == [("task.updated", {"id": tid, "fields": ["title"]})]
    await ok(client, owner, UPDATE_TASK, {"id": tid, "status": "DONE"})
    assert await outbox.new() == [("task.completed", {"id": tid})]
    await ok(client, owner, UPDATE_TASK, {"id": tid, "status": "OPEN"})
    assert await outbox.new() == [
        ("task.updated", {"id": tid, "fields": ["completedAt", "status"]})
    ]

    await ok(client, owner, DELETE_TASK, {"id": tid})
    await ok(client, owner, DELETE_LEAD, {"id": lid})
    await ok(client, owner, DELETE_CONTACT, {"id": cid})
    assert await outbox.new() == [
        ("task.deleted", {"id": tid}),
        ("lead.deleted", {"id": lid}),
        ("contact.deleted", {"id": cid}),
    ]


async def test_upserts_emit_one_event_per_created_or_changed_item(client, owner):
    outbox = Outbox(owner)
    items = [{"externalId": f"x-{i}", "name": f"Person {i}"} for i in range(3)]
    body = await ok(client, owner, UPSERT_CONTACTS, {"items": items})
    ids = [r["contact"]["id"] for r in body["upsertContacts"]["results"]]
    assert await outbox.new() == [("contact.created", {"id": i}) for i in ids]

    items[1]["email"] = "p1@example.com"
    items.append({"externalId": "x-3"})  # new without a name: fails, emits nothing
    items.append({"externalId": "x-4", "name": "Person 4"})
    body = (await ok(client, owner, UPSERT_CONTACTS, {"items": items}))["upsertContacts"]
    assert [r["outcome"] for r in body["results"]] == [
        "UNCHANGED",
        "UPDATED",
        "UNCHANGED",
        "FAILED",
        "CREATED",
    ]
    assert await outbox.new() == [
        ("contact.updated", {"id": ids[1], "fields": ["email"]}),
        ("contact.created", {"id": body["results"][4]["contact"]["id"]}),
    ]
    await ok(client, owner, UPSERT_CONTACTS, {"items": items})
    assert await outbox.new() == []  # an idempotent re-run changes nothing, says nothing

    leads = [{"externalId": "l-1", "title": "Deal", "contactExternalId": "x-0"}]
    body = await ok(client, owner, UPSERT_LEADS, {"items": leads})
    lid = body["upsertLeads"]["results"][0]["lead"]["id"]
    assert await outbox.new() == [("lead.created", {"id": lid, "status": "NEW"})]
    leads[0].update(value="99", status="CONTACTED")
    await ok(client, owner, UPSERT_LEADS, {"items": leads})
    assert await outbox.new() == [("lead.updated", {"id": lid, "fields": ["status", "value"]})]


async def test_refused_writes_emit_nothing(client, owner):
    outbox = Outbox(owner)
    contact = await create_contact(client, owner.token, externalId="taken")
    lead = await create_lead(client, owner.token)
    task = await create_task(client, owner.token)
    await outbox.new()
    refused = [
        (CREATE_CONTACT, {"name": "", "email": "not an email"}),
        (CREATE_CONTACT, {"name": "Dup", "externalId": "taken"}),
        (UPDATE_CONTACT, {"id": contact["id"], "phone": "call me maybe"}),
        (UPDATE_LEAD, {"id": lead["id"], "status": "WON"}),  # NEW → WON is not a move
        (UPDATE_LEAD, {"id": lead["id"], "value": "-1", "title": "ok"}),
        (UPDATE_TASK, {"id": task["id"], "leadId": lead["id"], "contactId": contact["id"]}),
        (CREATE_TASK, {"title": "x" * 201}),
        (DELETE_TASK, {"id": "VGFzazo5OTk5OTk5"}),  # Task:9999999
    ]
    for query, i in refused:
        body = await gql(client, query, {"i": i}, token=owner.token)
        assert error_codes(body) in (["BAD_USER_INPUT"], ["NOT_FOUND"]), (i, body)
    body = await ok(client, owner, UPSERT_LEADS, {"items": [{"externalId": "no-title"}]})
    assert body["upsertLeads"]["failed"] == 1
    assert await outbox.new() == []


async def test_events_match_the_writes_that_won_a_race(client, owner):
    """Concurrent writers that lose (unique external id, a status moved meanwhile) roll back
    their transaction: every event in the outbox belongs to a committed change."""
    outbox = Outbox(owner)

    async def create(n: int) -> dict[str, Any]:
        i = {"name": f"Racer {n}", "externalId": "same-key"}
        return await gql(client, CREATE_CONTACT, {"i": i}, token=owner.token)

    bodies = await asyncio.gather(*(create(n) for n in range(6)))
    winners = [b for b in bodies if "errors" not in b]
    assert len(winners) == 1, bodies
    assert all(error_codes(b) == ["BAD_USER_INPUT"] for b in bodies if "errors" in b)
    winner = winners[0]["data"]["createContact"]["contact"]["id"]
    stored = await Contact.filter(tenant_id=outbox.tenant_id, external_id="same-key")
    assert [c.id for c in stored] == [decode_id(winner, "Contact")]
    assert await outbox.new() == [("contact.created", {"id": winner})]

    lead = await create_lead(client, owner.token)
    await outbox.new()
    moves = await asyncio.gather(
        *(move(client, owner.token, lead["id"], s) for s in ("CONTACTED", "QUALIFIED", "LOST"))
    )
    row = await Lead.get(id=decode_id(lead["id"], "Lead"))
    events = await outbox.new()
    # However the moves interleaved, the outbox tells the story of the stored status.
    done = [m for m in moves if "errors" not in m]
    assert len(events) == len(done) >= 1, (moves, events)
    assert [e[0] for e in events] == ["lead.status_changed"] * len(done)
    assert events[0][1]["from"] == "NEW"
    for before, after in itertools.pairwise(events):
        assert after[1]["from"] == before[1]["to"]
    assert events[-1][1]["to"] == row.status.value
