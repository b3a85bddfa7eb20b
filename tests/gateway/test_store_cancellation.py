"""A task cancelled while its transaction begins must not take the store down with it:
Tortoise's own clients then kept SQLite's lock (every later query waited forever) or lost
a PostgreSQL pool connection (models/engines/)."""

from __future__ import annotations

import asyncio

from tortoise import connections
from tortoise.transactions import in_transaction

from models.jobs import Job
from tests.conftest import Store


async def _transaction() -> None:
    async with in_transaction():
        await Job.filter(id=-1).count()


async def test_cancelling_a_transaction_at_any_point_leaves_the_store_usable(store: Store) -> None:
    # Cancel after 0, 1, 2, ... turns of the loop: some land while BEGIN is awaited.
    for turns in range(40):
        task = asyncio.create_task(_transaction())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for _ in range(30):  # more than the pool holds: a leaked connection would show
        assert await asyncio.wait_for(Job.filter(id=-1).count(), timeout=5) == 0
        async with asyncio.timeout(5):
            await _transaction()
    if store.kind == "postgres":
        pool = connections.get("default")._pool
        assert pool.get_idle_size() == pool.get_size(), "a pool connection was never given back"
