"""Incoming webhook throughput on PostgreSQL: the gateway's `POST /webhooks/standard`
(verify the Standard Webhooks signature, store the event in the inbox with its
processing job in one transaction, answer 200) against a raw Starlette POST handler that
does the bare minimum of the same work (HMAC check, one INSERT … ON CONFLICT DO NOTHING
through asyncpg, 200).

    .venv/bin/python bench/bench_webhooks_in.py [--requests 2000] [--rounds 5] [--concurrency 16]

Both apps run in this process, driven by the same in-process ASGI driver with
`--concurrency` requests in flight; rounds alternate so background load hits both alike.
Needs PostgreSQL at $BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test);
a scratch database is created and dropped. Prints events/second of each and the ratio
gateway/baseline (target: >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import statistics
import time
import uuid
from typing import Any

import asyncpg
from _util import bench_settings, call, open_bench_store
from standardwebhooks import Webhook

PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
SECRET = "whsec_" + base64.b64encode(b"bench-secret-of-thirty-two-bytes").decode()


def signed(n: int) -> list[tuple[bytes, dict[str, str]]]:
    """n distinct events signed by the standardwebhooks package (outside the timing)."""
    wh = Webhook(SECRET)
    out = []
    for i in range(n):
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = dt.datetime.now(dt.UTC)
        body = json.dumps({"type": "bench.event", "data": {"i": i, "note": "x" * 200}})
        out.append(
            (
                body.encode(),
                {
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": wh.sign(msg_id, now, body),
                },
            )
        )
    return out


def baseline_app(pool: asyncpg.Pool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    key = base64.b64decode(SECRET.removeprefix("whsec_"))

    async def receive(request: Request) -> Response:
        body = await request.body()
        msg_id = request.headers["webhook-id"]
        ts = request.headers["webhook-timestamp"]
        digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        expected = base64.b64encode(digest).decode()
        if not any(
            hmac.compare_digest(s.partition(",")[2], expected)
            for s in request.headers["webhook-signature"].split()
        ):
            return Response(status_code=401)
        payload = json.loads(body)
        await pool.execute(
            "INSERT INTO bench_inbox (provider, event_id, payload) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            "standard",
            msg_id,
            json.dumps(payload),
        )
        return JSONResponse({"received": True})

    return Starlette(routes=[Route("/webhooks/standard", receive, methods=["POST"])])


async def drive(app: Any, events: list[tuple[bytes, dict[str, str]]], concurrency: int) -> float:
    """Send every event with `concurrency` in flight; events per second."""
    queue = list(reversed(events))

    async def lane() -> None:
        while queue:
            body, headers = queue.pop()
            response = await call(app, "POST", "/webhooks/standard", body, headers)
            assert response.status == 200, response.body

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return len(events) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    name = f"sb_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN.replace("postgres://", "postgresql://", 1))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    pool: asyncpg.Pool | None = None
    try:
        from gateway.app import create_app
        from models import store as db

        settings = bench_settings(
            database_url=url,
            webhook_system_secrets={"standard": SECRET},
            rate_limit_webhooks="100000000/hour",
        )
        await open_bench_store(settings)
        gateway = create_app(settings, configure_logs=True)
        pool = await asyncpg.create_pool(
            url.replace("postgres://", "postgresql://", 1), min_size=5, max_size=5
        )
        await pool.execute(
            "CREATE TABLE bench_inbox (id BIGSERIAL PRIMARY KEY, provider VARCHAR(40) NOT NULL, "
            "event_id VARCHAR(255) NOT NULL, payload JSONB NOT NULL, "
            "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (provider, event_id))"
        )
        baseline = baseline_app(pool)

        warm = signed(300)
        await drive(gateway, warm, args.concurrency)
        await drive(baseline, warm, args.concurrency)

        gw_rates, base_rates = [], []
        for _ in range(args.rounds):
            events = signed(args.requests)
            gw_rates.append(await drive(gateway, events, args.concurrency))
            base_rates.append(await drive(baseline, events, args.concurrency))
        gw, base = statistics.median(gw_rates), statistics.median(base_rates)

        from models.webhooks import WebhookInbox

        stored = await WebhookInbox.filter(provider="standard").count()
        expected = 300 + args.requests * args.rounds
        assert stored == expected, (stored, expected)
        print(
            f"events per round: {args.requests}, rounds: {args.rounds}, "
            f"in flight: {args.concurrency} (medians of rounds); PostgreSQL"
        )
        print(f"baseline  raw Starlette (hmac + 1 INSERT)          : {base:8.0f} events/s")
        print(f"gateway   /webhooks/standard (verify, inbox + job) : {gw:8.0f} events/s")
        print(f"ratio gateway/baseline: {gw / base:.2f}x (target >= 0.50x)")
        await db.close_store()
    finally:
        if pool is not None:
            await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
