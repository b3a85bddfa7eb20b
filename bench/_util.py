"""Shared benchmark plumbing: a minimal in-process ASGI driver, timing and percentiles.

Requests go straight into the ASGI app (no sockets, no HTTP client library), so the
figures are the server's own cost per request; both sides of a comparison use the same
driver.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Response:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("10.9.8.7", 40000),
) -> Response:
    raw_headers = [(b"host", b"bench")]
    if body:
        raw_headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": client,
        "server": ("bench", 80),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    out_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return Response(status, out_headers, b"".join(chunks))


def graphql_body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"query": query, "variables": variables or {}}).encode()


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    """n sequential calls; the duration of each, in seconds."""
    out = []
    perf = time.perf_counter
    for _ in range(n):
        t0 = perf()
        await fn()
        out.append(perf() - t0)
    return out


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "mean": statistics.fmean(samples) * 1000,
        "p50": percentile(samples, 50) * 1000,
        "p99": percentile(samples, 99) * 1000,
        "p99.9": percentile(samples, 99.9) * 1000,
    }


def temp_sqlite_url() -> str:
    fd, path = tempfile.mkstemp(prefix="switchboard-bench-", suffix=".sqlite3")
    os.close(fd)
    os.unlink(path)
    return f"sqlite://{path}"


def bench_settings(**overrides: Any) -> Any:
    from kit.settings import load_settings

    base: dict[str, Any] = {
        "switchboard_env": "test",
        "database_url": temp_sqlite_url(),
        "log_json": True,
        "log_level": "WARNING",
        "gc_freeze": False,
        # Real budgets on the path, large enough that the benchmark never hits them.
        "rate_limit_authenticated": "10000000/hour",
        "rate_limit_anonymous": "10000000/hour",
        "login_attempts_per_account": "100000/minute",
        "login_attempts_per_address": "100000/minute",
        "run_worker": False,
    }
    base.update(overrides)
    return load_settings(**base)


async def open_bench_store(settings: Any) -> None:
    from tortoise import Tortoise

    from models import store as db

    await db.open_store(settings)
    await Tortoise.generate_schemas()


REGISTER = """mutation($i: RegisterOrganizationInput!) {
  registerOrganization(input: $i) { accessToken } }"""


async def register_owner(app: Any, email: str = "bench-owner@example.com") -> str:
    body = graphql_body(
        REGISTER,
        {
            "i": {
                "organizationName": "Bench Inc",
                "email": email,
                "password": "correct horse battery staple",
                "name": "Bench",
            }
        },
    )
    response = await call(app, "POST", "/graphql", body)
    data = response.json()
    assert "errors" not in data, data
    return data["data"]["registerOrganization"]["accessToken"]


PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


async def create_scratch_database(
    kind: str, admin: str | None = None
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A store URL to fill, and the coroutine function that drops it: a temporary SQLite
    file, or a new PostgreSQL database on `admin`'s server ($BENCH_POSTGRES_URL's)."""
    if kind == "sqlite":

        async def nothing() -> None:
            return None

        return temp_sqlite_url(), nothing
    import asyncpg

    admin_url = admin or PG_ADMIN
    admin_dsn = admin_url.replace("postgres://", "postgresql://", 1)
    name = f"sb_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(admin_dsn)
        try:
            await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await c.close()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


@contextlib.asynccontextmanager
async def scratch_database(kind: str) -> AsyncIterator[str]:
    """`create_scratch_database` as a context: the store is dropped afterwards."""
    url, drop = await create_scratch_database(kind)
    try:
        yield url
    finally:
        await drop()
