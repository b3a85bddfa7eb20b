"""Shared fixtures.

The store runs on SQLite and on PostgreSQL (`store` is parametrised: every test that
uses it runs on both); shared backends run on memory and on Redis. In CI
(`CI=true`) a missing PostgreSQL or Redis fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from tortoise import Tortoise

from gateway.app import create_app
from kit.settings import Settings, load_settings
from models import store as db
from models.knowledge import install_search_index

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]


def unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI requires it)", pytrace=False)
    pytest.skip(message)


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "switchboard_env": "test",
        "database_url": "sqlite://:memory:",
        "log_json": False,
        "gc_freeze": False,
        "rate_limit_authenticated": "100000/hour",
        "rate_limit_anonymous": "100000/hour",
        "login_attempts_per_account": "1000/minute",
        "login_attempts_per_address": "10000/minute",
        "allowed_origins": [],
        # The mail sandboxes' delivery webhooks need a served gateway at PUBLIC_URL: the
        # tests that use them turn them on.
        "sandbox_webhooks": False,
        # Stored files go to a temporary directory, never the working tree's data/.
        "storage_url": f"file://{tempfile.gettempdir()}/switchboard-test-objects",
    }
    base.update(overrides)
    return load_settings(**base)


# Store -----------------------------------------------------------------------------


async def _create_pg_database(suffix: str = "") -> str:
    name = f"sb_test_{RUN_ID}{suffix}"
    try:
        conn = await asyncpg.connect(
            PG_ADMIN_URL.replace("postgres://", "postgresql://", 1), timeout=5
        )
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


async def _drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://", 1), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class Store:
    kind: str
    url: str


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    """An initialised store with every table, on SQLite and then on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    else:
        url = await _create_pg_database()
    settings = make_settings(database_url=url)
    await db.close_store()
    await db.open_store(settings)
    # Tables straight from the models (always current while areas are being built);
    # tests/gateway/test_migrations.py proves the checked-in migrations build the same store.
    await Tortoise.generate_schemas()
    await install_search_index(Tortoise.get_connection("default"))  # raw SQL of 0013
    try:
        yield Store(request.param, url)
    finally:
        await db.close_store()
        if request.param == "postgres":
            await _drop_pg_database(url)


@pytest.fixture
def settings(store: Store) -> Settings:
    return make_settings(database_url=store.url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    yield create_app(settings, configure_logs=False)
    # The store is shared by the session: work this test queued and did not run (the mail
    # of every registration, say) must not land in a later test's worker.
    from models.jobs import Job, JobStatus

    await Job.filter(status__in=[JobStatus.QUEUED.value, JobStatus.FAILED.value]).delete()


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """In-process HTTP client; the store is already open (no lifespan needed)."""
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


# Redis -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL)
    try:
        await asyncio.wait_for(client.ping(), 3)
    except Exception as exc:
        unavailable("Redis", exc)
    finally:
        await client.aclose()
    yield REDIS_URL


# Real server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def running_server(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port (or `port`) in this event loop."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await close_app_clients(app)


async def close_app_clients(app: Any) -> None:
    """What the app's lifespan closes at shutdown, except the store (the session's
    `store` fixture owns it): the provider registry's SDK clients, sessions and breaker
    store. They reopen on next use, so the app stays usable."""
    services = getattr(getattr(app, "state", None), "services", None)
    if services is None:  # not the gateway (e.g. a sandbox app)
        return
    registry = services.providers
    if registry is not None:
        await registry.aclose()


@pytest.fixture
async def live_server(app: Any) -> AsyncIterator[str]:
    async with running_server(app) as url:
        yield url


# GraphQL helpers ---------------------------------------------------------------------


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=h
    )
    body = response.json()
    body["_status"] = response.status_code
    return body


def error_codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


REGISTER = """
mutation($input: RegisterOrganizationInput!) {
  registerOrganization(input: $input) {
    accessToken refreshToken role
    user { id email }
    organization { id name }
  }
}"""

STRONG_PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    token: str
    refresh: str
    email: str
    user_id: str
    org_id: str
    password: str = STRONG_PASSWORD


async def register(
    client: httpx.AsyncClient, org: str = "Acme", email: str | None = None
) -> Account:
    email = email or f"owner-{uuid.uuid4().hex[:10]}@example.com"
    body = await gql(
        client,
        REGISTER,
        {
            "input": {
                "organizationName": org,
                "email": email,
                "password": STRONG_PASSWORD,
                "name": "Owner",
            }
        },
    )
    assert "errors" not in body, body
    data = body["data"]["registerOrganization"]
    return Account(
        data["accessToken"],
        data["refreshToken"],
        email,
        data["user"]["id"],
        data["organization"]["id"],
    )


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def unchanged(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """The store is exactly as before, and the gateway still answers."""
    from tests.factories import store_counts  # factories import this module

    before = await store_counts()
    yield
    assert await store_counts() == before
    alive = await gql(client, "{ serverInfo { version } }")
    assert alive["data"]["serverInfo"]["version"], alive


# Waiting and background workers --------------------------------------------------------


async def eventually(check: Any, what: str, limit: float = 60) -> Any:
    """Wait until `await check()` answers something truthy, and return it (the one wait
    helper of the suite); the limit only stops a hung test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not (value := await check()):
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.02)
    return value


@pytest.fixture
async def worker(store: Store) -> AsyncIterator[Any]:
    """Start in-process runtimes on the test store, fast polling: `await worker()` runs jobs
    and the outbox relay, `await worker(run_jobs=False)` the relay only; other keyword
    arguments are settings."""
    from gateway.worker import Runtime

    started: list[Runtime] = []

    async def start(run_jobs: bool = True, **overrides: Any) -> Runtime:
        rt = Runtime(
            make_settings(
                **{
                    "database_url": store.url,
                    "job_poll_seconds": 0.05,
                    "outbox_poll_seconds": 0.05,
                    "job_lease_seconds": 5,
                    "worker_shutdown_grace_seconds": 0.5,
                    "redis_key_prefix": f"sbtest-{RUN_ID}",
                    **overrides,
                }
            ),
            run_jobs=run_jobs,
        )
        await rt.start()
        started.append(rt)
        return rt

    yield start
    for rt in started:
        await rt.stop()
