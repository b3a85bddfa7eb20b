"""Benchmark: `contacts(first: 100) { owner openTasks }` from the store vs from memory.

Runs, in one process and one run:

1. the gateway schema, executed with a real Context over the real store (SQLite in a
   temporary directory by default; set BENCH_DATABASE_URL=postgres://… for PostgreSQL),
   with its DataLoaders, permissions and extensions;
2. a strawberry schema of the same types and fields over in-memory Python objects
   (the baseline: what the query costs with no store at all);
3. the full app over HTTP in-process (httpx ASGITransport), for reference.

Prints requests/second for each, the ratio store/memory (target ≥ 0.8×) and the number
of SQL statements one request runs.

    .venv/bin/python bench/bench_contacts.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import strawberry
from strawberry.extensions import ParserCache, ValidationCache
from tortoise import Tortoise
from tortoise.connection import get_connection

from gateway.app import create_app
from kit.ratelimit import RateLimiter
from kit.roles import Role
from kit.security import Principal, issue_access_token
from kit.settings import Settings, load_settings
from models import store as db
from models.accounts import User
from models.contacts import Contact
from models.members import Membership
from models.tasks import Task
from models.tenants import Tenant
from resolvers.context import Context, Services
from schema.build import build_schema

QUERY = """query Contacts($first: Int!) {
  contacts(first: $first) {
    edges { cursor node { id name email company owner { name } openTasks { title dueAt } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
PAGE = 100
TASKS_PER_CONTACT = 2


# The store ------------------------------------------------------------------------------


async def seed() -> Principal:
    tenant = await Tenant.create(name="Bench", slug=f"bench-{uuid.uuid4().hex[:8]}")
    owners = [
        await User.create(
            email=f"owner{i}-{uuid.uuid4().hex[:6]}@example.com",
            name=f"Owner {i}",
            password_hash="x",
        )
        for i in range(5)
    ]
    for user in owners:
        await Membership.create(user_id=user.id, tenant_id=tenant.id, role=Role.OWNER.value)
    await Contact.bulk_create(
        [
            Contact(
                tenant_id=tenant.id,
                name=f"Contact {i:03}",
                email=f"c{i}@example.com",
                company="Acme",
                owner_id=owners[i % len(owners)].id,
                external_id=f"c-{i}",
            )
            for i in range(PAGE)
        ]
    )
    due = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    contacts = await Contact.filter(tenant_id=tenant.id).order_by("id")
    await Task.bulk_create(
        [
            Task(
                tenant_id=tenant.id,
                title=f"Task {j} of {c.name}",
                contact_id=c.id,
                due_at=due + dt.timedelta(days=j),
            )
            for c in contacts
            for j in range(TASKS_PER_CONTACT)
        ]
    )
    return Principal(user_id=owners[0].id, tenant_id=tenant.id, role=Role.OWNER)


class StatementCounter:
    """Counts statements on the default connection's class (a measurement hook)."""

    NAMES = ("execute_query", "execute_query_dict", "execute_insert", "execute_many")

    def __init__(self) -> None:
        self.count = 0
        self.cls = type(get_connection("default"))
        self.originals = {n: getattr(self.cls, n) for n in self.NAMES}

    def __enter__(self) -> StatementCounter:
        for name, original in self.originals.items():
            setattr(self.cls, name, self._wrap(original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.originals.items():
            setattr(self.cls, name, original)

    def _wrap(self, original: Any) -> Any:
        async def counted(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(conn, query, *args, **kwargs)

        return counted


# The in-memory baseline ----------------------------------------------------------------


@strawberry.type
class MemUser:
    name: str


@strawberry.type
class MemTask:
    title: str
    due_at: dt.datetime | None


@strawberry.type
class MemContact:
    id: strawberry.ID
    name: str
    email: str
    company: str
    _owner: strawberry.Private[MemUser]
    _tasks: strawberry.Private[list[MemTask]]

    @strawberry.field
    async def owner(self) -> MemUser | None:
        return self._owner

    @strawberry.field
    async def open_tasks(self) -> list[MemTask]:
        return self._tasks


@strawberry.type
class MemEdge:
    cursor: str
    node: MemContact


@strawberry.type
class MemPageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class MemConnection:
    edges: list[MemEdge]
    page_info: MemPageInfo


def memory_schema() -> strawberry.Schema:
    owners = [MemUser(name=f"Owner {i}") for i in range(5)]
    due = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    contacts = [
        MemContact(
            id=strawberry.ID(f"Q29udGFjdDo{i}"),
            name=f"Contact {i:03}",
            email=f"c{i}@example.com",
            company="Acme",
            _owner=owners[i % 5],
            _tasks=[
                MemTask(title=f"Task {j}", due_at=due + dt.timedelta(days=j))
                for j in range(TASKS_PER_CONTACT)
            ],
        )
        for i in range(PAGE)
    ]

    @strawberry.type
    class Query:
        @strawberry.field
        async def contacts(self, first: int) -> MemConnection:
            page = contacts[:first]
            edges = [MemEdge(cursor=f"cursor-{i}", node=c) for i, c in enumerate(page)]
            return MemConnection(
                edges=edges, page_info=MemPageInfo(has_next_page=False, end_cursor="cursor-99")
            )

    return strawberry.Schema(
        query=Query, extensions=[lambda: ParserCache(maxsize=16), ValidationCache]
    )


# Measuring ---------------------------------------------------------------------------


async def rate(run: Callable[[], Awaitable[None]], seconds: float) -> float:
    for _ in range(20):  # warm up caches (parser, validation, statements)
        await run()
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(10):
            await run()
        done += 10
    return done / elapsed


def check(result: Any) -> None:
    if result.errors:
        raise SystemExit(f"query failed: {result.errors}")
    edges = result.data["contacts"]["edges"]
    assert len(edges) == PAGE and all(e["node"]["owner"] for e in edges), edges[:1]
    assert all(len(e["node"]["openTasks"]) == TASKS_PER_CONTACT for e in edges)


async def main(seconds: float) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-contacts-")
    url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite://{tmp}/bench.sqlite3"
    settings: Settings = load_settings(
        switchboard_env="test",
        database_url=url,
        log_json=False,
        gc_freeze=False,
        rate_limit_enabled=False,
    )
    await db.open_store(settings)
    await Tortoise.generate_schemas(safe=True)
    principal = await seed()
    store_schema = build_schema(settings)
    services = Services(settings=settings, limiter=RateLimiter())
    variables = {"first": PAGE}

    async def from_store() -> None:
        ctx = Context(services=services, request_id="bench", principal=principal)
        check(await store_schema.execute(QUERY, variable_values=variables, context_value=ctx))

    mem = memory_schema()

    async def from_memory() -> None:
        check(await mem.execute(QUERY, variable_values=variables))

    with StatementCounter() as counter:
        await from_store()
    statements = counter.count

    app = create_app(settings, configure_logs=False)
    token, _ = issue_access_token(settings, principal)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def over_http() -> None:
            response = await client.post(
                "/graphql",
                json={"query": QUERY, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
            body = response.json()
            if body.get("errors") or len(body["data"]["contacts"]["edges"]) != PAGE:
                raise SystemExit(f"HTTP query failed: {body}")

        # Alternate the two main measurements so load from elsewhere hits both alike.
        store_rates, memory_rates = [], []
        for _ in range(3):
            memory_rates.append(await rate(from_memory, seconds / 3))
            store_rates.append(await rate(from_store, seconds / 3))
        http_rate = await rate(over_http, seconds / 3)

    store_rps, memory_rps = max(store_rates), max(memory_rates)
    backend = url.split("://", 1)[0]
    print(f"contacts(first: {PAGE}) with owner and openTasks ({TASKS_PER_CONTACT} each), {backend}")
    print(f"  SQL statements per request:         {statements}")
    print(f"  in-memory strawberry schema:         {memory_rps:8.1f} req/s")
    print(f"  gateway schema over the store:       {store_rps:8.1f} req/s")
    print(
        f"  ratio store / memory:                {store_rps / memory_rps:8.2f}x  (target >= 0.80x)"
    )
    print(f"  full app over HTTP (ASGI, in-proc):  {http_rate:8.1f} req/s")
    await db.close_store()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per variant")
    asyncio.run(main(parser.parse_args().seconds))
