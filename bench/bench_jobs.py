"""Job queue throughput on PostgreSQL: the gateway's worker (`gateway/worker.py`: batched
`FOR UPDATE SKIP LOCKED` claims with a lease, lease renewal, fenced outcome writes,
retry bookkeeping) against a bare asyncpg loop doing the minimum of the same work
(claim one row with `FOR UPDATE SKIP LOCKED`, run the no-op handler, mark it done).

    .venv/bin/python bench/bench_jobs.py [--jobs 2000] [--rounds 5] [--concurrency 8]

Both drain the same `jobs` table with `--concurrency` jobs in flight and as many
database connections, one after the other
in alternating rounds (so background load hits both alike); the jobs of a round are
enqueued before its clock starts. Needs PostgreSQL at $BENCH_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/test); a scratch database is created and dropped.
Prints jobs/second of each (medians) and the ratio gateway/baseline (target: >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import asyncpg
from _util import bench_settings, open_bench_store

PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")

DONE = {"n": 0, "target": 0, "event": asyncio.Event()}


async def enqueue_all(n: int) -> None:
    from tortoise.transactions import in_transaction

    from resolvers import jobs

    async with in_transaction() as conn:
        for i in range(n):
            await jobs.enqueue("bench.noop", {"i": i}, connection=conn)


async def gateway_round(n: int, concurrency: int) -> float:
    from gateway.worker import Runtime

    settings = bench_settings(
        database_url=os.environ["BENCH_DB"],
        worker_concurrency=concurrency,
        job_poll_seconds=0.05,
        job_lease_seconds=30,
    )
    DONE.update(n=0, target=n, event=asyncio.Event())
    await enqueue_all(n)
    runtime = Runtime(settings, run_jobs=True)
    t0 = time.perf_counter()
    await runtime.start()
    await DONE["event"].wait()  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - t0
    await runtime.stop()
    return n / elapsed


CLAIM = (
    "UPDATE jobs SET status = 'running', locked_by = $1, attempts = attempts + 1 "
    "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= now() "
    "ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, payload"
)
FINISH = "UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1"


async def baseline_round(pool: asyncpg.Pool, n: int, concurrency: int) -> float:
    await enqueue_all(n)
    done = 0

    async def worker(name: str) -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while True:
                row = await conn.fetchrow(CLAIM, name)
                if row is None:
                    return
                await noop_work()
                await conn.execute(FINISH, row["id"])
                done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(f"w{i}") for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    assert done == n, (done, n)
    return n / elapsed


async def noop_work() -> None:
    await asyncio.sleep(0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from resolvers.jobs import JobContext, job_handler

    @job_handler("bench.noop")
    async def noop(ctx: JobContext, payload: dict[str, Any]) -> None:
        await noop_work()
        DONE["n"] += 1  # type: ignore[operator]
        if DONE["n"] >= DONE["target"]:  # type: ignore[operator]
            DONE["event"].set()  # type: ignore[attr-defined]

    name = f"sb_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN.replace("postgres://", "postgresql://", 1))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    os.environ["BENCH_DB"] = url
    pool: asyncpg.Pool | None = None
    try:
        from models import store as db
        from models.jobs import Job

        # The gateway's pool gets as many connections as the baseline's (plus two for
        # its relay and scheduler); Tortoise's default is 5 (DATABASE_URL ?maxsize=).
        pooled = f"{url}?maxsize={args.concurrency + 2}"
        await open_bench_store(bench_settings(database_url=pooled))
        pool = await asyncpg.create_pool(
            url.replace("postgres://", "postgresql://", 1),
            min_size=args.concurrency,
            max_size=args.concurrency,
        )
        await gateway_round(200, args.concurrency)  # warm-up
        await baseline_round(pool, 200, args.concurrency)

        gw_rates, base_rates = [], []
        for _ in range(args.rounds):
            gw_rates.append(await gateway_round(args.jobs, args.concurrency))
            base_rates.append(await baseline_round(pool, args.jobs, args.concurrency))
        gw, base = statistics.median(gw_rates), statistics.median(base_rates)
        total = await Job.filter(kind="bench.noop", status="succeeded").count()
        assert total == 400 + 2 * args.jobs * args.rounds, total
        print(
            f"jobs per round: {args.jobs}, rounds: {args.rounds}, in flight: "
            f"{args.concurrency} (medians of rounds); PostgreSQL"
        )
        print(f"baseline  asyncpg loop (claim 1, run, mark done)      : {base:8.0f} jobs/s")
        print(f"gateway   worker (batched claims, lease, fenced write) : {gw:8.0f} jobs/s")
        print(f"ratio gateway/baseline: {gw / base:.2f}x (target >= 0.50x)")
        await db.close_store()
    finally:
        if pool is not None:
            await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
