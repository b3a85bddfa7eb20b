"""Jobs across real processes (`switchboard worker` subprocesses) on PostgreSQL:

- a worker killed with SIGKILL mid-job: another worker takes the job after its lease;
- two workers over many jobs: every job runs exactly once;
- a periodic job with two workers: each period slot runs once;
- SIGTERM: the worker stops gracefully.
"""

from __future__ import annotations

import collections
import uuid
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

from models.jobs import Job, JobStatus
from resolvers import jobs
from tests import job_handlers  # noqa: F401 - registers the kinds enqueued here
from tests.conftest import Store, eventually
from tests.processes import process_env, start_worker


@pytest.fixture
def pg(store: Store) -> Store:
    if store.kind != "postgres":
        pytest.skip("multi-process workers need PostgreSQL (SQLite is one process)")
    return store


def lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


async def test_killed_worker_job_is_taken_over_after_its_lease(pg: Store, tmp_path: Path) -> None:
    record = tmp_path / "runs.txt"
    job = await jobs.enqueue("test.block_first_try", {"path": str(record)})
    env = process_env(pg.url, job_lease_seconds=2, job_poll_seconds=0.1)
    first = start_worker(env, tmp_path / "w1.log", "tests.job_handlers")
    try:

        async def started() -> bool:
            return any(row[0] == str(job.id) for row in lines(record))

        await eventually(started, "the first worker to start the job")
    finally:
        first.kill()  # SIGKILL mid-job: no shutdown code, the lease stays
    row = await Job.get(id=job.id)
    assert row.status == JobStatus.RUNNING and row.attempts == 1
    assert row.locked_by and row.locked_by.split(":")[1] == str(first.pid)

    second = start_worker(env, tmp_path / "w2.log", "tests.job_handlers")
    try:

        async def done() -> bool:
            return (await Job.get(id=job.id)).status == JobStatus.SUCCEEDED

        await eventually(done, f"the second worker to finish the job:\n{second.output()}")
    finally:
        assert await second.stop() == 0, second.output()
    runs = [r for r in lines(record) if r[0] == str(job.id)]
    assert [r[2] for r in runs] == ["1", "2"]
    assert runs[0][1].split(":")[1] == str(first.pid)
    assert runs[1][1].split(":")[1] == str(second.pid)
    assert (await Job.get(id=job.id)).attempts == 2


async def test_two_workers_never_run_a_job_twice(pg: Store, tmp_path: Path) -> None:
    record = tmp_path / "runs.txt"
    env = process_env(pg.url, job_lease_seconds=10, job_poll_seconds=0.05, worker_concurrency=8)
    workers = [start_worker(env, tmp_path / f"w{i}.log", "tests.job_handlers") for i in range(2)]
    try:
        for w in workers:
            await w.wait_for_output("running")
        async with in_transaction() as conn:
            created = [
                await jobs.enqueue("test.count", {"path": str(record)}, connection=conn)
                for _ in range(300)
            ]
        ids = {j.id for j in created}

        async def all_done() -> bool:
            n = await Job.filter(id__in=ids, status=JobStatus.SUCCEEDED).count()
            return n == len(ids)

        await eventually(all_done, "every job to succeed", limit=100)
    finally:
        codes = [await w.stop() for w in workers]
    assert codes == [0, 0], [w.output() for w in workers]
    runs = [r for r in lines(record) if int(r[0]) in ids]
    per_job = collections.Counter(int(r[0]) for r in runs)
    assert set(per_job) == ids
    assert max(per_job.values()) == 1  # never twice
    per_worker = collections.Counter(r[1].split(":")[1] for r in runs)
    assert set(per_worker) == {str(w.pid) for w in workers}, per_worker  # both took part


async def test_periodic_job_runs_once_per_period_with_two_workers(
    pg: Store, tmp_path: Path
) -> None:
    ticks = tmp_path / f"ticks-{uuid.uuid4().hex[:6]}.txt"
    env = process_env(pg.url, job_poll_seconds=0.05, test_tick_file=str(ticks))
    workers = [
        start_worker(env, tmp_path / f"p{i}.log", "tests.periodic_handlers") for i in range(2)
    ]
    try:

        async def several_slots() -> bool:
            return len({r[0] for r in lines(ticks)}) >= 5

        await eventually(several_slots, "five period slots to run")
    finally:
        codes = [await w.stop() for w in workers]
    assert codes == [0, 0], [w.output() for w in workers]
    per_slot = collections.Counter(r[0] for r in lines(ticks))
    assert max(per_slot.values()) == 1, per_slot
    slots = await Job.filter(kind="periodic:test-tick").values_list("unique_key", flat=True)
    assert len(slots) == len(set(slots))


async def test_sigterm_gives_a_running_job_back_to_the_queue(pg: Store, tmp_path: Path) -> None:
    record = tmp_path / "runs.txt"
    job = await jobs.enqueue("test.block_first_try", {"path": str(record)})
    env = process_env(pg.url, job_poll_seconds=0.1, worker_shutdown_grace_seconds=0.5)
    worker = start_worker(env, tmp_path / "w.log", "tests.job_handlers")
    try:

        async def started() -> bool:
            return any(row[0] == str(job.id) for row in lines(record))

        await eventually(started, "the worker to start the job")
    finally:
        code = await worker.stop()  # SIGTERM: the job blocks past the grace period
    assert code == 0, worker.output()
    row = await Job.get(id=job.id)
    assert row.status == JobStatus.QUEUED
    assert row.attempts == 0 and row.locked_by is None and row.lease_expires_at is None
    await Job.filter(id=job.id).delete()
