"""The worker's side of the job queue: claim due jobs with a lease, renew leases, run a
claimed job to its outcome (fenced by the claim's token), release it at shutdown, and
enqueue the current slot of every periodic job.

The queue's API for the domain (handlers, `enqueue`, list and retry) is
`resolvers/jobs.py`; the loops that call these functions are `gateway/worker.py`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import traceback
import uuid
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from kit.settings import Settings
from models.jobs import Job, JobStatus
from resolvers.context import Services
from resolvers.jobs import (
    HANDLERS,
    PERIODICS,
    JobContext,
    PermanentFailure,
    RetryLater,
    enqueue,
    now,
)

log = logging.getLogger("switchboard.jobs")

MAX_ERROR_CHARS = 4000


def _is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


async def claim(worker_id: str, *, limit: int, lease_seconds: float) -> list[Job]:
    """Take up to `limit` due jobs (queued, or running with an expired lease) for this worker.

    PostgreSQL: one UPDATE over `SELECT … FOR UPDATE SKIP LOCKED`, so concurrent workers
    never take the same row. SQLite (one process): a conditional UPDATE per candidate.
    Each claim gets its own token in `locked_by`, which fences later writes.
    """
    if limit <= 0:
        return []
    conn = connections.get("default")
    moment = now()
    lease_until = moment + dt.timedelta(seconds=lease_seconds)
    token = f"{worker_id}/{uuid.uuid4().hex[:12]}"
    if _is_postgres(conn):
        sql = (
            "UPDATE jobs SET status = 'running', locked_by = $1, lease_expires_at = $2, "
            "attempts = attempts + 1, started_at = $3 "
            "WHERE id IN (SELECT id FROM jobs WHERE "
            "(status IN ('queued', 'failed') AND run_at <= $3) OR "
            "(status = 'running' AND lease_expires_at < $3) "
            "ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) "
            "RETURNING *"
        )
        rows = await conn.execute_query_dict(sql, [token, lease_until, moment, limit])
        claimed = [Job._init_from_db(**row) for row in rows]
        return sorted(claimed, key=lambda j: (j.run_at, j.id))
    else:
        candidates = (
            await Job.filter(
                status__in=[JobStatus.QUEUED.value, JobStatus.FAILED.value], run_at__lte=moment
            )
            .order_by("run_at", "id")
            .limit(limit)
            .values("id", "attempts")
        )
        expired = (
            await Job.filter(status=JobStatus.RUNNING.value, lease_expires_at__lt=moment)
            .order_by("run_at", "id")
            .limit(limit)
            .values("id", "attempts")
        )
        ids = []
        for row in (candidates + expired)[:limit]:
            updated = await Job.filter(id=row["id"], attempts=row["attempts"]).update(
                status=JobStatus.RUNNING.value,
                locked_by=token,
                lease_expires_at=lease_until,
                attempts=row["attempts"] + 1,
                started_at=moment,
            )
            if updated:
                ids.append(row["id"])
    if not ids:
        return []
    return list(await Job.filter(id__in=ids, locked_by=token).order_by("run_at", "id"))


async def extend_leases(held: list[Job], lease_seconds: float) -> set[int]:
    """Heartbeat for every job this worker runs, in two queries; returns the ids still held."""
    if not held:
        return set()
    ids = [job.id for job in held]
    tokens = list({job.locked_by for job in held if job.locked_by})
    mine = Job.filter(id__in=ids, locked_by__in=tokens, status=JobStatus.RUNNING.value)
    await mine.update(lease_expires_at=now() + dt.timedelta(seconds=lease_seconds))
    return {row["id"] for row in await mine.values("id")}


async def extend_lease(job: Job, lease_seconds: float) -> bool:
    """Heartbeat: keep the lease while the handler runs. False when the job was taken away."""
    until = now() + dt.timedelta(seconds=lease_seconds)
    updated = await Job.filter(
        id=job.id, locked_by=job.locked_by, status=JobStatus.RUNNING.value
    ).update(lease_expires_at=until)
    return bool(updated)


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:MAX_ERROR_CHARS]


async def _finish(job: Job, **values: Any) -> bool:
    """Write the outcome, but only while this claim still holds the job (fencing)."""
    conn = connections.get("default")
    if _is_postgres(conn):
        # The hot path of every job: one plain statement (the ORM's query building cost
        # as much as the round trip). Column names come from this module, never input.
        names = list(values)
        assignments = ", ".join(f"{name} = ${i + 1}" for i, name in enumerate(names))
        n = len(names)
        sql = (
            f"UPDATE jobs SET {assignments} "  # noqa: S608 - fixed column names
            f"WHERE id = ${n + 1} AND locked_by = ${n + 2} AND status = 'running'"
        )
        updated, _ = await conn.execute_query(
            sql, [*(values[name] for name in names), job.id, job.locked_by]
        )
    else:
        updated = await Job.filter(
            id=job.id, locked_by=job.locked_by, status=JobStatus.RUNNING.value
        ).update(**values)
    if not updated:
        log.warning(
            "job %s (%s) was taken over before it finished; outcome dropped", job.id, job.kind
        )
    return bool(updated)


async def run_claimed(
    job: Job,
    worker_id: str,
    settings: Settings | None = None,
    services: Services | None = None,
) -> str:
    """Run one claimed job to an outcome; returns the status written."""
    spec = HANDLERS.get(job.kind)
    if spec is None:
        await _finish(
            job,
            status=JobStatus.DEAD.value,
            last_error=f"no handler registered for job kind {job.kind!r}",
            finished_at=now(),
            locked_by=None,
            lease_expires_at=None,
        )
        return JobStatus.DEAD.value
    if job.attempts > job.max_attempts:
        # Its last try was cut short (the worker died and the lease ran out).
        await _finish(
            job,
            status=JobStatus.DEAD.value,
            last_error=(job.last_error or "the worker stopped during the last attempt"),
            finished_at=now(),
            locked_by=None,
            lease_expires_at=None,
        )
        return JobStatus.DEAD.value
    ctx = JobContext(
        job_id=job.id,
        kind=job.kind,
        tenant_id=job.tenant_id,
        attempt=job.attempts,
        max_attempts=job.max_attempts,
        worker_id=worker_id,
        created_at=job.created_at,
        settings=settings,
        services=services,
    )
    payload = dict(job.payload or {})
    try:
        if spec.timeout:
            await asyncio.wait_for(spec.handler(ctx, payload), spec.timeout)
        else:
            await spec.handler(ctx, payload)
    except RetryLater as exc:
        await _finish(
            job,
            status=JobStatus.QUEUED.value,
            attempts=max(0, job.attempts - 1),
            run_at=now() + dt.timedelta(seconds=exc.seconds),
            last_error=_error_text(exc),
            locked_by=None,
            lease_expires_at=None,
        )
        return JobStatus.QUEUED.value
    except PermanentFailure as exc:
        log.warning("job %s (%s) failed permanently: %s", job.id, job.kind, exc)
        await _finish(
            job,
            status=JobStatus.DEAD.value,
            last_error=_error_text(exc),
            finished_at=now(),
            locked_by=None,
            lease_expires_at=None,
        )
        return JobStatus.DEAD.value
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = _error_text(exc if not isinstance(exc, TimeoutError) else TimeoutError("timed out"))
        if job.attempts >= job.max_attempts:
            log.error("job %s (%s) is dead after %s attempts", job.id, job.kind, job.attempts)
            await _finish(
                job,
                status=JobStatus.DEAD.value,
                last_error=error,
                finished_at=now(),
                locked_by=None,
                lease_expires_at=None,
            )
            return JobStatus.DEAD.value
        delay = spec.delay(job.attempts)
        log.warning(
            "job %s (%s) attempt %s failed; retry in %.1fs",
            job.id,
            job.kind,
            job.attempts,
            delay,
            exc_info=True,
        )
        await _finish(
            job,
            status=JobStatus.FAILED.value,
            run_at=now() + dt.timedelta(seconds=delay),
            last_error=error,
            locked_by=None,
            lease_expires_at=None,
        )
        return JobStatus.FAILED.value
    await _finish(
        job,
        status=JobStatus.SUCCEEDED.value,
        finished_at=now(),
        locked_by=None,
        lease_expires_at=None,
    )
    return JobStatus.SUCCEEDED.value


async def release(job: Job) -> None:
    """Give an interrupted job back to the queue (shutdown): the try does not count."""
    await Job.filter(id=job.id, locked_by=job.locked_by, status=JobStatus.RUNNING.value).update(
        status=JobStatus.QUEUED.value,
        attempts=max(0, job.attempts - 1),
        locked_by=None,
        lease_expires_at=None,
    )


def period_slot(every: dt.timedelta, at: dt.datetime) -> dt.datetime:
    seconds = int(every.total_seconds())
    epoch = int(at.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


async def schedule_periodics(at: dt.datetime | None = None) -> list[Job]:
    """Enqueue the current slot of every periodic job (deduped by key); returns the slot jobs."""
    moment = at or now()
    slot_jobs = []
    for spec in list(PERIODICS.values()):
        slot = period_slot(spec.every, moment)
        key = f"periodic:{spec.name}:{slot.isoformat()}"
        slot_jobs.append(
            await enqueue(spec.kind, {"slot": slot.isoformat()}, run_at=slot, unique_key=key)
        )
    return slot_jobs
