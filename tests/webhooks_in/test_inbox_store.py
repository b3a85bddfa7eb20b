"""resolvers/inbox_store.py: the one-statement PostgreSQL path and the portable
transaction store the same rows, and a duplicate event stores nothing."""

from __future__ import annotations

import uuid

import pytest

from models.jobs import Job
from models.webhooks import WebhookInbox
from resolvers import inbox_store


def new_row(event_id: str) -> WebhookInbox:
    return WebhookInbox(
        tenant_id=None,
        provider="generic",
        source_key=f"src-{uuid.uuid4().hex[:8]}",
        event_id=event_id,
        event_type="thing.happened",
        payload={"id": event_id, "n": 1},
        headers={"x-audit": "1"},
    )


async def stored(row: WebhookInbox) -> tuple[WebhookInbox, list[Job]]:
    saved = await WebhookInbox.get(id=row.id)
    jobs = [
        j
        for j in await Job.filter(kind=inbox_store.PROCESS_JOB)
        if (j.payload or {}).get("inbox_id") == row.id
    ]
    return saved, jobs


@pytest.mark.parametrize("path", ["store", "_store_portable", "_store_postgres"])
async def test_each_path_stores_the_row_and_one_job_once(store, path):
    if path == "_store_postgres" and store.kind != "postgres":
        pytest.skip("the one-statement path is PostgreSQL's")
    from tortoise import connections

    write = getattr(inbox_store, path)
    conn = connections.get("default")

    async def run(row: WebhookInbox) -> bool:
        return await (write(conn, row) if path == "_store_postgres" else write(row))

    row = new_row(f"evt-{uuid.uuid4().hex[:8]}")
    assert await run(row) is True
    saved, jobs = await stored(row)
    assert (saved.event_id, saved.payload, saved.headers) == (
        row.event_id,
        row.payload,
        row.headers,
    )
    assert len(jobs) == 1 and jobs[0].status == "queued"
    duplicate = new_row(row.event_id)
    duplicate.source_key = row.source_key
    before = (await WebhookInbox.all().count(), await Job.all().count())
    assert await run(duplicate) is False
    assert (await WebhookInbox.all().count(), await Job.all().count()) == before
