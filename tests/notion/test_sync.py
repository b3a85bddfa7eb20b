"""syncContactsToNotion, the proof: the real notion-client (over the provider layer)
against the gateway's Notion sandbox over HTTP; 250 contacts written paced under Notion's
limit with a 429 injected mid-way, then 3 contacts changed and a re-run that updates 3
and creates nothing; a run cut mid-way resumes without duplicates; per-contact errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from strawberry import relay

from models.contacts import Contact
from models.jobs import Job
from models.notion import NotionConnection, NotionContactPage, NotionSync
from providers.sandbox.base import Fault
from providers.sandbox.notion import plain
from resolvers.notion import SYNC_JOB
from tests.conftest import Store, error_codes, eventually, gql, register
from tests.credentials.test_credentials import member_token, tenant_id_of
from tests.notion.conftest import SYNC, SYNC_QUERY, Gateway, serving

RATE = 20  # our pace for the test (requests a second); Notion's default 3/s is just slower


def title_of(page: dict[str, Any]) -> str:
    return str(plain(page["properties"]["Name"]))


async def make_contacts(tenant_id: int, n: int, prefix: str = "C") -> list[Contact]:
    await Contact.bulk_create([
        Contact(tenant_id=tenant_id, name=f"{prefix}{i:03d}", email=f"{prefix.lower()}{i}@x.io",
                company=f"Co {i % 7}")
        for i in range(n)
    ])  # fmt: skip
    return list(await Contact.filter(tenant_id=tenant_id).order_by("id"))


async def settled(gateway: Gateway, owner: Any, gid: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        state = await gateway.sync_state(owner, gid)
        return state if state["status"] in ("SUCCEEDED", "FAILED") else None

    return await eventually(done, "the sync to settle", limit=120)


async def test_250_contacts_paced_with_a_429_then_a_rerun_updates_three(
    store: Store, worker: Any
) -> None:
    async with serving(store, worker, outbound_rate_limits={"notion": f"{RATE}/second"}) as gw:
        gw.notion.rate_per_second = RATE + 5  # Notion refuses what goes faster
        owner = await register(gw.client)
        assert "errors" not in await gw.connect(owner)
        tenant_id = tenant_id_of(owner)
        contacts = await make_contacts(tenant_id, 250)
        other = await register(gw.client, org="Other")  # its contacts are not synced
        await make_contacts(tenant_id_of(other), 5, prefix="X")
        gw.notion.recorded.clear()

        sync = await gw.sync(owner)
        assert sync["status"] == "QUEUED"
        again = await gw.sync(owner)  # one at a time: the same sync answers
        assert again["id"] == sync["id"]

        async def halfway() -> bool:
            return (await gw.sync_state(owner, sync["id"]))["created"] >= 100

        await eventually(halfway, "a hundred pages written", limit=60)
        gw.notion.faults.append(Fault(status=429, retry_after=1, path="/v1/pages", count=1))
        done = await settled(gw, owner, sync["id"])
        assert done == {**done, "status": "SUCCEEDED", "total": 250, "created": 250,
                        "updated": 0, "failed": 0, "errors": []}  # fmt: skip
        pages = gw.pages()
        assert sorted(title_of(p) for p in pages) == [c.name for c in contacts]  # once each
        sent = list(gw.notion.recorded)
        statuses = [r["status"] for r in sent]
        assert statuses.count(429) == 1 and sent[statuses.index(429)]["fault"]  # only ours
        after = sent[statuses.index(429) + 1]
        assert after["at"] - sent[statuses.index(429)]["at"] >= 0.9  # Retry-After honoured
        times = [r["at"] for r in sent]
        assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= RATE + 5
        written = {p["properties"]["Email"]["email"]: p for p in pages}
        assert plain(written["c7@x.io"]["properties"]["Company"]) == "Co 0"

        # Three contacts change; the re-run updates those three and creates nothing.
        for contact in contacts[10:13]:
            contact.company = "Changed Inc"
            await contact.save()
        gw.notion.recorded.clear()
        rerun = await gw.sync(owner)
        assert rerun["id"] != sync["id"]
        done = await settled(gw, owner, rerun["id"])
        assert done == {**done, "status": "SUCCEEDED", "total": 3, "created": 0, "updated": 3}
        assert len(gw.pages()) == 250
        changed = [p for p in gw.pages() if plain(p["properties"]["Company"]) == "Changed Inc"]
        assert sorted(title_of(p) for p in changed) == [c.name for c in contacts[10:13]]
        methods = [(r["method"], r["path"].split("/")[2]) for r in gw.notion.recorded]
        assert ("POST", "pages") not in methods and methods.count(("PATCH", "pages")) == 3

        # Nothing changed: nothing written.
        quiet = await settled(gw, owner, (await gw.sync(owner))["id"])
        assert quiet["total"] == 0 and quiet["created"] == quiet["updated"] == 0


async def test_a_cut_run_resumes_and_adopts_the_page_it_had_created(
    store: Store, worker: Any
) -> None:
    async with serving(store, worker) as gw:
        owner = await register(gw.client)
        assert "errors" not in await gw.connect(owner)
        tenant_id = tenant_id_of(owner)
        contacts = await make_contacts(tenant_id, 12)
        connection = await NotionConnection.get(tenant_id=tenant_id)
        # A run that asked Notion to create contact 0's page, and was killed before it
        # wrote down the answer: the row says "asked", Notion has the page.
        from resolvers.notion.sync import columns_of, contact_properties

        workspace_db = next(iter(gw.notion.workspaces.values())).databases[connection.database_id]
        ws = next(iter(gw.notion.workspaces.values()))
        from providers.sandbox.notion import _apply  # the sandbox's own property writer

        page_props = {n: {"id": s["id"], "type": s["type"], s["type"]: None}
                      for n, s in workspace_db["properties"].items()}  # fmt: skip
        _apply(page_props, contact_properties(contacts[0], columns_of(workspace_db["properties"])),
               workspace_db["properties"])  # fmt: skip
        made = "2026-01-01T00:00:00.000Z"
        ws.pages["11111111-2222-4333-8444-555555555555"] = {
            "object": "page", "id": "11111111-2222-4333-8444-555555555555",
            "created_time": made, "last_edited_time": made,
            "parent": {"type": "database_id", "database_id": connection.database_id},
            "archived": False, "in_trash": False, "properties": page_props, "url": "",
        }  # fmt: skip
        await NotionContactPage.create(
            tenant_id=tenant_id, connection_id=connection.id, contact_id=contacts[0].id
        )
        # Notion fails a page creation (not retried: it may have happened): the job's try
        # fails, and the next one resumes with the contacts still to do.
        gw.notion.faults.append(Fault(status=503, count=1, path="/v1/pages", method="POST"))
        sync = await gw.sync(owner)
        done = await settled(gw, owner, sync["id"])
        assert done == {**done, "status": "SUCCEEDED", "total": 12, "failed": 0}
        assert done["created"] == 11 and done["updated"] == 1  # contact 0's page adopted
        assert sorted(title_of(p) for p in gw.pages()) == [c.name for c in contacts]
        assert any(r["status"] == 503 for r in gw.notion.recorded)


async def test_refused_contacts_are_listed_and_the_rest_goes_on(store: Store, worker: Any) -> None:
    async with serving(store, worker) as gw:
        owner = await register(gw.client)
        assert "errors" not in await gw.connect(owner)
        tenant_id = tenant_id_of(owner)
        contacts = await make_contacts(tenant_id, 4)
        bad = contacts[0]  # the first page asked for
        gw.notion.faults.append(Fault(status=400, code="validation_error",
                                      message="Email is not a valid email.",
                                      path="/v1/pages", method="POST", count=1))  # fmt: skip
        sync = await gw.sync(owner)
        done = await settled(gw, owner, sync["id"])
        assert done["status"] == "SUCCEEDED" and done["created"] == 3 and done["failed"] == 1
        [error] = done["errors"]
        assert error["contactId"] == str(relay.GlobalID("Contact", str(bad.id)))
        assert "validation_error" in error["message"]
        # The refused one is written by the next run (it has no page yet).
        rerun = await settled(gw, owner, (await gw.sync(owner))["id"])
        assert rerun["total"] == 1 and rerun["created"] == 1
        assert sorted(title_of(p) for p in gw.pages()) == [c.name for c in contacts]


async def test_syncs_are_their_owners(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    assert "errors" not in await gateway.connect(owner)
    sync = await gateway.sync(owner)
    read_only, _ = await member_token(gateway.settings, owner, "READ_ONLY")
    body = await gql(gateway.client, SYNC, {"i": {}}, read_only)
    assert error_codes(body) == ["FORBIDDEN"]
    support, _ = await member_token(gateway.settings, owner, "SUPPORT")
    body = await gql(gateway.client, SYNC_QUERY, {"id": sync["id"]}, support)
    assert error_codes(body) == ["NOT_FOUND"]  # another person's sync
    body = await gql(gateway.client, SYNC, {"i": {}}, support)
    assert error_codes(body) == ["NOT_FOUND"]  # no connection of their own
    other = await register(gateway.client, org="Other")
    body = await gql(gateway.client, SYNC_QUERY, {"id": sync["id"]}, other.token)
    assert error_codes(body) == ["NOT_FOUND"]
    assert json.dumps(body).count("Contact") == 0


async def test_two_racing_sync_requests_make_one_sync(store: Store, worker: Any) -> None:
    async with serving(store, worker, run_jobs=False) as gw:
        owner = await register(gw.client)
        assert "errors" not in await gw.connect(owner)
        first, second = await asyncio.gather(gw.sync(owner), gw.sync(owner))
        assert first["id"] == second["id"]
        tenant_id = tenant_id_of(owner)
        assert await NotionSync.filter(tenant_id=tenant_id).count() == 1
        assert await Job.filter(tenant_id=tenant_id, kind=SYNC_JOB).count() == 1
