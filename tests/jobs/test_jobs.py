"""Durable jobs in one process, on SQLite and PostgreSQL: transactions, retries with
backoff, dead letters, RetryLater, PermanentFailure, dedupe, graceful shutdown, and the
OWNER's `jobs` / `retryJob` fields.

Multi-process proofs (kill -9, two workers, periodic jobs) are in test_jobs_processes.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from gateway.worker import Runtime
from models.events import OutboxEvent
from models.jobs import Job, JobStatus
from models.tenants import Tenant
from resolvers import jobs
from resolvers.jobs import JobContext, PermanentFailure, RetryLater, job_handler
from schema.relay import decode_id, encode_id
from tests.conftest import Store, error_codes, eventually, gql, make_settings, register

RUNS: dict[str, list[tuple[int, int, dt.datetime]]] = {}


def _seen(tag: str, ctx: JobContext) -> None:
    RUNS.setdefault(tag, []).append((ctx.job_id, ctx.attempt, jobs.now()))


@job_handler("jobs_test.ok")
async def ok(ctx: JobContext, payload: dict) -> None:
    _seen(payload["tag"], ctx)


@job_handler("jobs_test.always_fails", max_attempts=3, backoff=[0.1, 0.3])
async def always_fails(ctx: JobContext, payload: dict) -> None:
    _seen(payload["tag"], ctx)
    raise RuntimeError(f"boom on try {ctx.attempt}")


@job_handler("jobs_test.retry_later", max_attempts=2)
async def retry_later(ctx: JobContext, payload: dict) -> None:
    _seen(payload["tag"], ctx)
    if len(RUNS[payload["tag"]]) < 3:
        raise RetryLater(0.3, "upstream said Retry-After: 0.3")


@job_handler("jobs_test.permanent", max_attempts=5)
async def permanent(ctx: JobContext, payload: dict) -> None:
    _seen(payload["tag"], ctx)
    raise PermanentFailure("the recipient does not exist")


@job_handler("jobs_test.slow")
async def slow(ctx: JobContext, payload: dict) -> None:
    _seen(payload["tag"], ctx)
    await asyncio.sleep(float(payload["seconds"]))


@pytest.fixture
def runtime(worker: Any) -> Callable[..., Awaitable[Runtime]]:
    return worker  # type: ignore[no-any-return]


def tag() -> str:
    return uuid.uuid4().hex


async def test_job_enqueued_in_a_rolled_back_transaction_never_runs(runtime: Any) -> None:
    lost, kept = tag(), tag()
    with pytest.raises(RuntimeError):
        async with in_transaction() as conn:
            await jobs.enqueue("jobs_test.ok", {"tag": lost}, connection=conn)
            raise RuntimeError("the change failed")
    async with in_transaction() as conn:
        job = await jobs.enqueue("jobs_test.ok", {"tag": kept}, connection=conn)
    await runtime()

    async def kept_done() -> bool:
        return (await Job.get(id=job.id)).status == JobStatus.SUCCEEDED

    await eventually(kept_done, "the committed job")
    assert RUNS.get(lost) is None
    rows = await Job.filter(kind="jobs_test.ok").values_list("payload", flat=True)
    assert {"tag": lost} not in rows and {"tag": kept} in rows


async def test_failing_job_retries_with_backoff_then_dead_letters(runtime: Any) -> None:
    t = tag()
    job = await jobs.enqueue("jobs_test.always_fails", {"tag": t})
    await runtime()

    async def dead() -> bool:
        return (await Job.get(id=job.id)).status == JobStatus.DEAD

    await eventually(dead, "the job to dead-letter")
    row = await Job.get(id=job.id)
    assert row.attempts == 3 and row.max_attempts == 3
    assert "boom on try 3" in (row.last_error or "")
    assert row.finished_at is not None and row.locked_by is None
    runs = RUNS[t]
    assert [attempt for _, attempt, _ in runs] == [1, 2, 3]  # never a fourth try
    # Each retry waited at least its step of the schedule [0.1, 0.3].
    assert runs[1][2] - runs[0][2] >= dt.timedelta(seconds=0.1)
    assert runs[2][2] - runs[1][2] >= dt.timedelta(seconds=0.3)


async def test_retry_later_reschedules_without_spending_attempts(runtime: Any) -> None:
    t = tag()
    job = await jobs.enqueue("jobs_test.retry_later", {"tag": t})
    await runtime()

    async def done() -> bool:
        return (await Job.get(id=job.id)).status == JobStatus.SUCCEEDED

    await eventually(done, "the job to succeed after two RetryLater")
    runs = RUNS[t]
    # Three runs with max_attempts=2: RetryLater did not count as a failed attempt.
    assert len(runs) == 3
    assert [a for _, a, _ in runs] == [1, 1, 1]
    assert all(b[2] - a[2] >= dt.timedelta(seconds=0.3) for a, b in itertools.pairwise(runs))
    assert (await Job.get(id=job.id)).attempts == 1


async def test_permanent_failure_dead_letters_at_once(runtime: Any) -> None:
    t = tag()
    job = await jobs.enqueue("jobs_test.permanent", {"tag": t})
    await runtime()

    async def dead() -> bool:
        return (await Job.get(id=job.id)).status == JobStatus.DEAD

    await eventually(dead, "the job to dead-letter")
    assert len(RUNS[t]) == 1
    assert "recipient does not exist" in ((await Job.get(id=job.id)).last_error or "")


async def test_unique_key_dedupes_even_inside_a_transaction(store: Store) -> None:
    key = f"dedupe-{tag()}"
    first = await jobs.enqueue("jobs_test.ok", {"tag": "a"}, unique_key=key)
    async with in_transaction() as conn:
        again = await jobs.enqueue("jobs_test.ok", {"tag": "b"}, unique_key=key, connection=conn)
        # The caller's transaction is still usable after the duplicate (savepoint).
        other = await jobs.enqueue("jobs_test.ok", {"tag": "c"}, connection=conn)
    assert again.id == first.id
    assert await Job.filter(unique_key=key).count() == 1
    assert await Job.filter(id=other.id).exists()


async def test_enqueue_rejects_unknown_kinds_and_naive_times(store: Store) -> None:
    with pytest.raises(ValueError, match="no handler"):
        await jobs.enqueue("jobs_test.nope", {})
    with pytest.raises(ValueError, match="timezone"):
        await jobs.enqueue("jobs_test.ok", {}, run_at=dt.datetime(2030, 1, 1))


def test_backoff_schedule_and_default_jitter() -> None:
    spec = jobs.HANDLERS["jobs_test.always_fails"]
    assert [spec.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.3, 0.3, 0.3]
    default = jobs.HANDLERS["jobs_test.ok"]
    for attempt, base in ((1, 2.0), (2, 4.0), (5, 32.0), (30, 3600.0)):
        delays = {default.delay(attempt) for _ in range(50)}
        assert all(0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(delays) > 1  # jittered


async def test_shutdown_returns_unfinished_jobs_to_the_queue(runtime: Any) -> None:
    t = tag()
    job = await jobs.enqueue("jobs_test.slow", {"tag": t, "seconds": 60})
    rt = await runtime(worker_shutdown_grace_seconds=0.2)

    async def running() -> bool:
        return bool(RUNS.get(t))

    await eventually(running, "the slow job to start")
    await rt.stop()
    row = await Job.get(id=job.id)
    assert row.status == JobStatus.QUEUED
    assert row.attempts == 0 and row.locked_by is None and row.lease_expires_at is None
    await Job.filter(id=job.id).delete()  # so no later test's worker picks up a 60 s job


async def test_shutdown_lets_short_jobs_finish(runtime: Any) -> None:
    t = tag()
    job = await jobs.enqueue("jobs_test.slow", {"tag": t, "seconds": 0.3})
    rt = await runtime(worker_shutdown_grace_seconds=30)

    async def running() -> bool:
        return bool(RUNS.get(t))

    await eventually(running, "the job to start")
    await rt.stop()
    assert (await Job.get(id=job.id)).status == JobStatus.SUCCEEDED


# GraphQL -----------------------------------------------------------------------------

JOBS = """
query($status: JobStatus, $kind: String, $first: Int, $after: String) {
  jobs(status: $status, kind: $kind, first: $first, after: $after) {
    edges { node { id kind status attempts maxAttempts lastError finishedAt } }
    pageInfo { hasNextPage endCursor }
  }
}"""

RETRY = """
mutation($input: RetryJobInput!) { retryJob(input: $input) { job { id status attempts } } }"""


async def test_owner_lists_failed_jobs_and_retries_one(client: Any, owner: Any) -> None:
    tenant_id = decode_id(owner.org_id, "Organization")
    other = await Tenant.create(name="Other", slug=f"other-{tag()[:8]}")
    now = jobs.now()
    dead = await Job.create(
        kind="jobs_test.ok",
        payload={"tag": tag()},
        tenant_id=tenant_id,
        status="dead",
        attempts=8,
        run_at=now,
        last_error="RuntimeError: boom",
        finished_at=now,
    )
    failed = await Job.create(
        kind="jobs_test.ok",
        payload={},
        tenant_id=tenant_id,
        status="failed",
        attempts=2,
        run_at=now + dt.timedelta(hours=1),
        last_error="timeout",
    )
    await Job.create(
        kind="jobs_test.ok", payload={}, tenant_id=tenant_id, run_at=now + dt.timedelta(hours=1)
    )
    foreign = await Job.create(
        kind="jobs_test.ok", payload={}, tenant_id=other.id, status="dead", run_at=now
    )

    body = await gql(client, JOBS, token=owner.token)
    ids = {e["node"]["id"] for e in body["data"]["jobs"]["edges"]}
    assert ids == {str(encode_id("Job", dead.id)), str(encode_id("Job", failed.id))}
    body = await gql(client, JOBS, {"status": "DEAD"}, token=owner.token)
    (edge,) = body["data"]["jobs"]["edges"]
    assert edge["node"]["status"] == "DEAD" and edge["node"]["lastError"] == "RuntimeError: boom"
    body = await gql(client, JOBS, {"first": 1}, token=owner.token)
    assert body["data"]["jobs"]["pageInfo"]["hasNextPage"] is True

    body = await gql(
        client, RETRY, {"input": {"id": str(encode_id("Job", dead.id))}}, token=owner.token
    )
    assert body["data"]["retryJob"]["job"]["status"] == "QUEUED"
    assert body["data"]["retryJob"]["job"]["attempts"] == 0
    row = await Job.get(id=dead.id)
    assert row.status == "queued" and row.finished_at is None

    # Another tenant's job is not found; a queued job cannot be "retried".
    body = await gql(
        client, RETRY, {"input": {"id": str(encode_id("Job", foreign.id))}}, token=owner.token
    )
    assert error_codes(body) == ["NOT_FOUND"]
    assert (await Job.get(id=foreign.id)).status == "dead"
    body = await gql(
        client, RETRY, {"input": {"id": str(encode_id("Job", dead.id))}}, token=owner.token
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    body = await gql(client, RETRY, {"input": {"id": "not-an-id"}}, token=owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    other_type = str(encode_id("Member", dead.id))
    body = await gql(client, RETRY, {"input": {"id": other_type}}, token=owner.token)
    assert error_codes(body) == ["NOT_FOUND"]


async def test_jobs_need_the_owner_role(client: Any, owner: Any) -> None:
    body = await gql(client, JOBS)
    assert error_codes(body) == ["UNAUTHENTICATED"]
    key = await gql(
        client,
        'mutation { createApiKey(input: {name: "ro", role: READ_ONLY}) { secret } }',
        token=owner.token,
    )
    secret = key["data"]["createApiKey"]["secret"]
    body = await gql(client, JOBS, headers={"Authorization": f"Bearer {secret}"})
    assert error_codes(body) == ["FORBIDDEN"]
    body = await gql(client, JOBS, {"first": 100000}, token=owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_two_owners_never_see_each_others_jobs(client: Any) -> None:
    a = await register(client, "A")
    b = await register(client, "B")
    ta = decode_id(a.org_id, "Organization")
    job = await Job.create(kind="x.y", payload={}, tenant_id=ta, status="dead", run_at=jobs.now())
    body = await gql(client, JOBS, token=b.token)
    assert body["data"]["jobs"]["edges"] == []
    node = await gql(
        client,
        "query($id: ID!) { node(id: $id) { id } }",
        {"id": str(encode_id("Job", job.id))},
        token=b.token,
    )
    assert node["data"]["node"] is None


async def test_retention_deletes_old_finished_work_and_keeps_dead_jobs(store: Store) -> None:
    tenant = await Tenant.create(name="R", slug=f"r-{tag()[:8]}")
    old = jobs.now() - dt.timedelta(days=30)
    recent = jobs.now() - dt.timedelta(days=1)
    old_done = await Job.create(
        kind="jobs_test.ok", payload={}, status="succeeded", run_at=old, finished_at=old
    )
    new_done = await Job.create(
        kind="jobs_test.ok", payload={}, status="succeeded", run_at=recent, finished_at=recent
    )
    old_dead = await Job.create(
        kind="jobs_test.ok", payload={}, status="dead", run_at=old, finished_at=old
    )
    old_event = await OutboxEvent.create(tenant_id=tenant.id, type="a.b", data={})
    await OutboxEvent.filter(id=old_event.id).update(created_at=old, published_at=old)
    unpublished = await OutboxEvent.create(tenant_id=tenant.id, type="a.b", data={})
    await OutboxEvent.filter(id=unpublished.id).update(created_at=old)

    ctx = JobContext(
        job_id=0,
        kind="periodic:retention",
        tenant_id=None,
        attempt=1,
        max_attempts=1,
        worker_id="test",
        created_at=jobs.now(),
        settings=make_settings(job_retention_days=7),
    )
    await jobs.apply_retention(ctx, {})
    assert not await Job.filter(id=old_done.id).exists()
    assert await Job.filter(id=new_done.id).exists()
    assert await Job.filter(id=old_dead.id).exists()
    assert not await OutboxEvent.filter(id=old_event.id).exists()
    assert await OutboxEvent.filter(id=unpublished.id).exists()  # never lose an event
    assert "periodic:retention" in jobs.HANDLERS and "retention" in jobs.PERIODICS


async def test_running_job_keeps_its_lease_against_another_worker(runtime: Any) -> None:
    """The job outlives its lease several times over; renewals keep the second worker off."""
    t = tag()
    job = await jobs.enqueue("jobs_test.slow", {"tag": t, "seconds": 2.5})
    await runtime(job_lease_seconds=0.6)

    async def running() -> bool:
        return bool(RUNS.get(t))

    await eventually(running, "the job to start")
    await runtime(job_lease_seconds=0.6)  # a second worker, polling every 50 ms

    async def done() -> bool:
        return (await Job.get(id=job.id)).status == JobStatus.SUCCEEDED

    await eventually(done, "the job to finish")
    assert len(RUNS[t]) == 1
    assert (await Job.get(id=job.id)).attempts == 1


@job_handler("jobs_test.too_slow", max_attempts=1, timeout=0.2)
async def too_slow(ctx: JobContext, payload: dict) -> None:
    _seen(payload["tag"], ctx)
    await asyncio.sleep(30)


async def test_a_try_that_outlives_its_timeout_fails(runtime: Any) -> None:
    t = tag()
    job = await jobs.enqueue("jobs_test.too_slow", {"tag": t})
    await runtime()

    async def dead() -> bool:
        return (await Job.get(id=job.id)).status == JobStatus.DEAD

    await eventually(dead, "the job to time out")
    assert "timed out" in ((await Job.get(id=job.id)).last_error or "")
    assert len(RUNS[t]) == 1


async def test_operator_cli_lists_dead_system_jobs_and_reruns_one(store: Store) -> None:
    import subprocess

    from tests.processes import SWITCHBOARD, process_env

    now = jobs.now()
    dead = await Job.create(
        kind="jobs_test.ok",
        payload={},
        status="dead",
        attempts=1,
        max_attempts=1,
        run_at=now,
        finished_at=now,
        last_error="Traceback…\nRuntimeError: upstream gone",
    )
    env = process_env(store.url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SWITCHBOARD, "jobs", *args], env=env, capture_output=True, text=True, timeout=60
        )

    listed = await asyncio.to_thread(cli, "--status", "dead", "--kind", "jobs_test.ok")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{dead.id}\t"))
    assert "tenant=-" in line and "RuntimeError: upstream gone" in line
    rerun = await asyncio.to_thread(cli, "--retry", str(dead.id))
    assert rerun.returncode == 0, rerun.stderr
    row = await Job.get(id=dead.id)
    assert row.status == "queued" and row.attempts == 0
    again = await asyncio.to_thread(cli, "--retry", str(dead.id))
    assert again.returncode == 1 and "Only dead or failed jobs" in again.stderr
    bad = await asyncio.to_thread(cli, "--status", "exploded")
    assert bad.returncode == 1 and "Unknown job status" in bad.stderr
    await Job.filter(id=dead.id).delete()
