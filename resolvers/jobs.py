"""Durable jobs: handlers, enqueueing, claiming with a lease, retries and dead letters.

- `@job_handler("kind", max_attempts=8, backoff=...)` registers
  `async def handler(ctx: JobContext, payload: dict) -> None`.
- `await enqueue(kind, payload, tenant_id=..., connection=conn)` writes the job row in
  the caller's transaction (pass the connection from `in_transaction()`), so a job is
  queued exactly when the change that caused it commits.
- A handler raises `RetryLater(seconds)` to come back later (e.g. honouring a
  `Retry-After`) without spending an attempt, or `PermanentFailure` to dead-letter at
  once; any other exception spends an attempt and retries with backoff and jitter
  until `max_attempts`, then the job is `dead` (an OWNER may re-run it: `retryJob`).
- `@periodic("name", every=timedelta(...))` runs a handler once per period across all
  processes: each period slot is one job with a unique key.

This module is the queue's API, for the domain: handlers, enqueueing, listing and
retrying. Claiming with a lease, running a claimed job to its outcome and releasing it
are the worker's side, in the shell (`gateway/job_runs.py`, driven by
`gateway/worker.py`); which modules register handlers is `resolvers/handlers.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, NotFound
from kit.settings import Settings
from models.events import OutboxEvent
from models.jobs import Job, JobStatus
from resolvers.context import Context, Services
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

log = logging.getLogger("switchboard.jobs")

Handler = Callable[["JobContext", dict[str, Any]], Awaitable[None]]
Backoff = Callable[[int], float] | Sequence[float]

DEFAULT_MAX_ATTEMPTS = 8
MAX_ERROR_CHARS = 4000


class RetryLater(Exception):
    """Raised by a handler: try again in `seconds` (does not spend an attempt)."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {seconds:g}s")
        self.seconds = max(0.0, float(seconds))
        self.reason = reason


class PermanentFailure(Exception):
    """Raised by a handler: retrying cannot help; dead-letter the job now."""


def default_backoff(attempt: int) -> float:
    """2s, 4s, 8s… capped at one hour, with ±20% jitter so retries do not stampede."""
    base = min(3600.0, 2.0 * 2 ** max(0, attempt - 1))
    return base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


@dataclass(frozen=True)
class JobKind:
    kind: str
    handler: Handler
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: Backoff = default_backoff
    timeout: float | None = None

    def delay(self, attempt: int) -> float:
        """Seconds before the next try after `attempt` failed tries."""
        if callable(self.backoff):
            return max(0.0, float(self.backoff(attempt)))
        schedule = list(self.backoff)
        if not schedule:
            return 0.0
        return float(schedule[min(attempt, len(schedule)) - 1])


@dataclass(frozen=True)
class Periodic:
    name: str
    every: dt.timedelta
    kind: str


HANDLERS: dict[str, JobKind] = {}
PERIODICS: dict[str, Periodic] = {}


def job_handler(
    kind: str,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    backoff: Backoff = default_backoff,
    timeout: float | None = None,
) -> Callable[[Handler], Handler]:
    """Register `async def handler(ctx: JobContext, payload: dict) -> None` for `kind`.

    `backoff` is a callable `attempt -> seconds` or a schedule of seconds (the last
    entry repeats). `timeout` (seconds) fails a try that runs longer.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    def register(fn: Handler) -> Handler:
        existing = HANDLERS.get(kind)
        if existing is not None and existing.handler is not fn:
            qualname = getattr(existing.handler, "__qualname__", existing.handler)
            if qualname != getattr(fn, "__qualname__", fn):
                raise ValueError(f"job kind {kind!r} is already registered")
        HANDLERS[kind] = JobKind(kind, fn, max_attempts, backoff, timeout)
        return fn

    return register


def periodic(
    name: str, *, every: dt.timedelta, max_attempts: int = 1
) -> Callable[[Handler], Handler]:
    """Run the handler once per `every` across all processes (payload: {"slot": start iso})."""
    if every.total_seconds() < 1:
        raise ValueError("periodic jobs run at most once a second")
    kind = f"periodic:{name}"

    def register(fn: Handler) -> Handler:
        job_handler(kind, max_attempts=max_attempts)(fn)
        PERIODICS[name] = Periodic(name, every, kind)
        return fn

    return register


@dataclass
class JobContext:
    """What a handler knows about the try it is running."""

    job_id: int
    kind: str
    tenant_id: int | None
    attempt: int  # 1 for the first try
    max_attempts: int
    worker_id: str
    created_at: dt.datetime
    settings: Settings | None = None  # the running process's settings
    services: Services | None = None  # the process's collaborators (provider registry, ...)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _current_connection(connection: BaseDBAsyncClient | None) -> BaseDBAsyncClient:
    return connection if connection is not None else connections.get("default")


# Enqueue ------------------------------------------------------------------------------


def new_job(
    kind: str,
    payload: dict[str, Any],
    *,
    tenant_id: int | None = None,
    run_at: dt.datetime | None = None,
    unique_key: str | None = None,
    max_attempts: int | None = None,
) -> Job:
    """The unsaved, queued `Job` row that `enqueue` stores (same checks and defaults).

    For code that writes the row itself (e.g. in one SQL statement with another row):
    build it here so it cannot drift from `enqueue`, then call `wake_workers(conn)`."""
    spec = HANDLERS.get(kind)
    if spec is None:
        raise ValueError(f"no handler registered for job kind {kind!r}")
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    return Job(
        kind=kind,
        payload=payload,
        tenant_id=tenant_id,
        run_at=run_at or now(),
        max_attempts=max_attempts or spec.max_attempts,
        unique_key=unique_key,
        status=JobStatus.QUEUED.value,
    )


async def enqueue(
    kind: str,
    payload: dict[str, Any],
    *,
    tenant_id: int | None = None,
    run_at: dt.datetime | None = None,
    unique_key: str | None = None,
    connection: BaseDBAsyncClient | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Queue a job; with `connection`, in the caller's transaction (it runs only if that commits).

    With `unique_key`, a job already queued under that key is returned instead of a
    second one (dedupe across requests and processes).
    """
    job = new_job(
        kind,
        payload,
        tenant_id=tenant_id,
        run_at=run_at,
        unique_key=unique_key,
        max_attempts=max_attempts,
    )
    conn = _current_connection(connection)
    if unique_key is None:
        await job.save(using_db=conn, force_create=True)
    else:
        existing = await Job.filter(unique_key=unique_key).using_db(conn).first()
        if existing is not None:
            return existing
        try:
            # A savepoint (or a short transaction of its own), so losing the race to
            # another process does not abort the caller's transaction on PostgreSQL.
            async with conn._in_transaction() as inner:
                await job.save(using_db=inner, force_create=True)
        except IntegrityError:
            found = await Job.filter(unique_key=unique_key).using_db(conn).first()
            if found is None:
                raise
            return found
    wake_workers(conn)
    return job


# The worker registers a wake-up callback so a fresh job runs without waiting for a poll.
_wakers: list[Callable[[], None]] = []


def add_waker(callback: Callable[[], None]) -> None:
    _wakers.append(callback)


def remove_waker(callback: Callable[[], None]) -> None:
    if callback in _wakers:
        _wakers.remove(callback)


def wake_workers(conn: BaseDBAsyncClient | None = None) -> None:
    """Tell this process's worker a job is due, once `conn`'s transaction commits.

    `enqueue` does this itself; call it after writing job rows by hand.
    """
    from resolvers.events import after_commit

    def wake() -> None:
        for cb in list(_wakers):
            cb()

    after_commit(conn, wake)


DEFAULT_RETENTION_DAYS = 14


@periodic("retention", every=dt.timedelta(hours=1))
async def apply_retention(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Delete succeeded jobs and published events older than JOB_RETENTION_DAYS.

    Dead jobs stay until someone retries them. A deleted job's unique key can be used
    again, so keys that must never repeat need their own table.
    """
    days = ctx.settings.job_retention_days if ctx.settings else DEFAULT_RETENTION_DAYS
    cutoff = now() - dt.timedelta(days=days)
    jobs_gone = await Job.filter(status=JobStatus.SUCCEEDED.value, finished_at__lt=cutoff).delete()
    events_gone = await OutboxEvent.filter(published_at__lt=cutoff).delete()
    if jobs_gone or events_gone:
        log.info("retention: deleted %s job(s) and %s event(s)", jobs_gone, events_gone)


# GraphQL-facing: the operator's view ----------------------------------------------------

LISTABLE = {s.value for s in JobStatus}


@operation("jobs:manage")
async def list_jobs(
    ctx: Context,
    *,
    status: str | None,
    kind: str | None,
    first: int | None,
    after: str | None,
) -> Page[Job]:
    """The caller's tenant's jobs, newest first; by default the ones that need attention."""
    principal = ctx.require_principal()
    qs = _listed(Job.filter(tenant_id=principal.tenant_id), status, kind)
    return await page_of(ctx, qs, first=first, after=after)


def _listed(qs: Any, status: str | None, kind: str | None) -> Any:
    """Jobs of `status` (default: the failed and dead ones, which need attention) and
    `kind`, for the GraphQL list and the operators' CLI alike."""
    if status is None:
        qs = qs.filter(status__in=[JobStatus.FAILED.value, JobStatus.DEAD.value])
    elif status not in LISTABLE:
        raise BadUserInput("Unknown job status.", details={"status": "is not a job status"})
    else:
        qs = qs.filter(status=status)
    return qs.filter(kind=kind) if kind else qs


@operation("jobs:manage")
async def retry_job(ctx: Context, *, job_id: int) -> Job:
    """Re-run a dead (or failed) job of the caller's tenant now, with a fresh set of attempts."""
    principal = ctx.require_principal()
    return await requeue(job_id, tenant_id=principal.tenant_id)


async def requeue(job_id: int, *, tenant_id: int | None) -> Job:
    """Queue a dead or failed job again now; `tenant_id=None` (operators, CLI) reaches any job."""
    async with in_transaction() as conn:
        qs = Job.filter(id=job_id)
        if tenant_id is not None:
            qs = qs.filter(tenant_id=tenant_id)
        job = await qs.using_db(conn).select_for_update().first()
        if job is None:
            raise NotFound("Job not found.")
        if job.status not in (JobStatus.DEAD.value, JobStatus.FAILED.value):
            raise BadUserInput(
                "Only dead or failed jobs can be retried.",
                details={"id": f"the job is {job.status}"},
            )
        job.status = JobStatus.QUEUED.value
        job.attempts = 0
        job.run_at = now()
        job.finished_at = None
        job.locked_by = None
        job.lease_expires_at = None
        await job.save(using_db=conn)
        wake_workers(conn)
    return job


async def jobs_for_operator(*, status: str | None, kind: str | None, limit: int) -> list[Job]:
    """Every tenant's jobs and the system's (CLI): by default the failed and dead ones."""
    qs = _listed(Job.all(), status, kind)
    return list(await qs.order_by("-id").limit(max(1, min(limit, 1000))))
