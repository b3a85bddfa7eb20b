"""Benchmark: a page of contacts from the store vs the same shape from memory.

Two queries: the flat page `contacts(first: 100) { edges { node { id name email company } } }`
and the nested one that also resolves each contact's `owner` and `openTasks` (DataLoaders).
The baseline (bench/bare_app.py) is a bare Strawberry app serving the same shape from
memory with plain synchronous resolvers and its parser and validation caches on: the
fastest natural version of the same page. Over HTTP a second baseline, the same app with
orjson as its JSON encoder (as the gateway has), separates what the encoder buys.

1. In-process: the gateway schema executed with a real Context over the real store
   (its DataLoaders, permissions and extensions) vs the bare schema, alternating.
2. Over HTTP (as users meet it): `switchboard serve` on the seeded store vs the bare app
   under uvicorn, each pinned to one core, `wrk` on the other (bench/_http.py),
   alternating rounds.

Prints requests/second, the ratio gateway/bare for each (target >= 0.8x) and the number of
SQL statements one request runs. SQLite in a temporary file by default; `--postgres` for a
scratch database on $BENCH_POSTGRES_URL's server.

    .venv/bin/python bench/bench_contacts.py [--seconds 6] [--postgres] [--no-http]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _http
import bare_app
from _util import scratch_database
from tortoise.connection import get_connection

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

FLAT = """query Contacts($first: Int!) {
  contacts(first: $first) { edges { node { id name email company } } }
}"""
NESTED = """query Contacts($first: Int!) {
  contacts(first: $first) {
    edges { cursor node { id name email company owner { name } openTasks { title dueAt } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
QUERIES = {"flat": FLAT, "nested": NESTED}
PAGE = bare_app.PAGE
TASKS_PER_CONTACT = bare_app.TASKS_PER_CONTACT
VARIABLES = {"first": PAGE}


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


def check(name: str, data: Any) -> None:
    edges = data["contacts"]["edges"]
    assert len(edges) == PAGE, f"{name}: {len(edges)} edges"
    if name == "nested":
        assert all(e["node"]["owner"] for e in edges), edges[:1]
        assert all(len(e["node"]["openTasks"]) == TASKS_PER_CONTACT for e in edges)


def ratio_line(label: str, gateway: float, bare: float, baseline: str = "bare") -> str:
    return (
        f"  {label:<8} gateway {gateway:8.1f} req/s   {baseline} {bare:8.1f} req/s   "
        f"ratio {gateway / bare:5.2f}x  (target >= 0.80x)"
    )


async def in_process(settings: Settings, principal: Principal, seconds: float) -> None:
    store_schema = build_schema(settings)
    services = Services(settings=settings, limiter=RateLimiter())
    for name, query in QUERIES.items():

        async def from_store(query: str = query, name: str = name) -> None:
            ctx = Context(services=services, request_id="bench", principal=principal)
            result = await store_schema.execute(query, variable_values=VARIABLES, context_value=ctx)
            if result.errors:
                raise SystemExit(f"query failed: {result.errors}")
            check(name, result.data)

        async def from_memory(query: str = query, name: str = name) -> None:
            result = await bare_app.schema.execute(query, variable_values=VARIABLES)
            if result.errors:
                raise SystemExit(f"query failed: {result.errors}")
            check(name, result.data)

        with StatementCounter() as counter:
            await from_store()
        # Alternate the two so load from elsewhere hits both alike; best of three.
        stores, memories = [], []
        for _ in range(3):
            memories.append(await rate(from_memory, seconds / 3))
            stores.append(await rate(from_store, seconds / 3))
        print(ratio_line(name, max(stores), max(memories)) + f"   {counter.count} SQL")


def over_http(settings: Settings, principal: Principal, seconds: float, rounds: int) -> None:
    token, _ = issue_access_token(settings, principal)
    auth = {"Authorization": f"Bearer {token}"}
    port_g, port_b = _http.free_port(), _http.free_port()
    env = {
        "DATABASE_URL": settings.database_url,
        "RATE_LIMIT_AUTHENTICATED": "1000000000/hour",
        "RATE_LIMIT_ANONYMOUS": "1000000000/hour",
        "GC_FREEZE": "true",
    }
    gateway_argv = [
        str(Path(sys.executable).parent / "switchboard"),
        "serve",
        "--port",
        str(port_g),
    ]
    sides = {
        "bare": (_http.uvicorn_argv("bare_app:app", port_b), port_b, {}, None),
        "bare+orjson": (_http.uvicorn_argv("bare_app:orjson_app", port_b), port_b, {}, None),
        "gateway": (gateway_argv, port_g, auth, env),
    }
    results: dict[str, dict[str, list[float]]] = {n: {s: [] for s in sides} for n in QUERIES}
    for _ in range(rounds):
        for side, (argv, port, headers, side_env) in sides.items():
            with _http.server(argv, port, side_env) as url:
                for name, query in QUERIES.items():
                    body = {"query": query, "variables": VARIABLES}
                    answer = _http.post_json(f"{url}/graphql", body, headers)
                    if answer.get("errors"):
                        raise SystemExit(f"{side} {name}: {answer['errors']}")
                    check(name, answer["data"])
                    _http.wrk(f"{url}/graphql", body, headers, seconds=1)  # warm up
                    figure = _http.wrk(f"{url}/graphql", body, headers, seconds=seconds)
                    results[name][side].append(figure["rps"])
    for name, by_side in results.items():
        gateway = statistics.median(by_side["gateway"])
        for baseline in ("bare", "bare+orjson"):
            bare = statistics.median(by_side[baseline])
            print(ratio_line(name, gateway, bare, baseline) + f"   (medians of {rounds} rounds)")


async def seeded(url: str) -> tuple[Settings, Principal]:
    settings = load_settings(
        switchboard_env="test", database_url=url, log_json=False, gc_freeze=False,
        rate_limit_enabled=False,
    )  # fmt: skip
    await db.open_store(settings, apply_migrations=True)
    return settings, await seed()


async def main(args: argparse.Namespace) -> None:
    async with scratch_database("postgres" if args.postgres else "sqlite") as url:
        settings, principal = await seeded(url)
        backend = url.split("://", 1)[0]
        print(f"contacts(first: {PAGE}), {backend}; nested: owner and {TASKS_PER_CONTACT} tasks")
        print("in-process (schema.execute):")
        await in_process(settings, principal, args.seconds)
        await db.close_store()
        if not args.no_http:
            print(f"over HTTP (server on cpu {_http.SERVER_CPU}, wrk on cpu {_http.LOAD_CPU}):")
            await asyncio.to_thread(over_http, settings, principal, args.seconds, args.rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per variant")
    parser.add_argument("--rounds", type=int, default=3, help="alternating HTTP rounds")
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database")
    parser.add_argument("--no-http", action="store_true", help="in-process figures only")
    asyncio.run(main(parser.parse_args()))
