"""A contact sync whose worker is killed mid-run (PostgreSQL, real `switchboard worker`
processes): the second worker takes the job after its lease and finishes it; every
contact has exactly one page, none written twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.contacts import Contact
from models.notion import NotionSync
from providers.sandbox.notion import plain
from schema.relay import decode_id
from tests.conftest import Store, eventually, register
from tests.credentials.test_credentials import tenant_id_of
from tests.notion.conftest import serving
from tests.processes import process_env, start_worker


async def test_a_killed_worker_mid_sync_leaves_nothing_lost_or_doubled(
    store: Store, worker: Any, tmp_path: Path
) -> None:
    if store.kind != "postgres":
        pytest.skip("multi-process workers need PostgreSQL (SQLite is one process)")
    async with serving(store, worker, run_jobs=False) as gw:
        owner = await register(gw.client)
        assert "errors" not in await gw.connect(owner)
        tenant_id = tenant_id_of(owner)
        await Contact.bulk_create(
            [Contact(tenant_id=tenant_id, name=f"K{i:03d}") for i in range(60)]
        )
        env = process_env(
            store.url, public_url=gw.url, job_lease_seconds=2, job_poll_seconds=0.1,
            outbound_rate_limits=json.dumps({"notion": "6/second"}),
        )  # fmt: skip
        sync = await gw.sync(owner)
        sync_id = decode_id(sync["id"], "NotionSync")
        first = start_worker(env, tmp_path / "w1.log")

        async def some_written() -> bool:
            row = await NotionSync.get(id=sync_id)
            return row.created >= 15

        try:
            await eventually(some_written, f"pages written by the first worker:\n{first.output()}")
        finally:
            first.kill()  # SIGKILL mid-run, a page request perhaps in flight
        cut = await NotionSync.get(id=sync_id)
        assert cut.status == "RUNNING" and cut.created < 60
        second = start_worker(env, tmp_path / "w2.log")
        try:

            async def settled() -> bool:
                row = await NotionSync.get(id=sync_id)
                return row.status == "SUCCEEDED"

            await eventually(settled, f"the second worker finishes:\n{second.output()}")
        finally:
            assert await second.stop() == 0, second.output()
        done = await NotionSync.get(id=sync_id)
        assert done.failed == 0 and done.created + done.updated >= 60
        titles = sorted(plain(p["properties"]["Name"]) for p in gw.pages())
        assert titles == [f"K{i:03d}" for i in range(60)]  # one page each, none twice
