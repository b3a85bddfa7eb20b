"""Background jobs, as an OWNER sees them: the ones that failed, and re-running one."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.jobs import Job as JobRow
from models.jobs import JobStatus
from resolvers import jobs
from schema.permissions import mutation, query
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    JobStatus,
    description="Where a job is: QUEUED (waiting for its time), RUNNING, SUCCEEDED, FAILED "
    "(the last try failed; the next one is scheduled) or DEAD (out of attempts or failed "
    "permanently; waits for `retryJob`).",
)


@strawberry.type(description="A unit of background work of the current organization.")
class Job(ModelNode):
    _model: ClassVar[type] = JobRow
    _permission: ClassVar[str] = "jobs:manage"
    id: relay.NodeID[int]
    kind: str = strawberry.field(description="What the job does, e.g. `webhook.deliver`.")
    status: JobStatus = strawberry.field(description="Where the job is.")
    attempts: int = strawberry.field(description="Tries spent so far.")
    max_attempts: int = strawberry.field(description="Tries it gets before it is dead.")
    run_at: dt.datetime = strawberry.field(description="When it runs next (or last became due).")
    last_error: str | None = strawberry.field(description="What went wrong on the last try.")
    created_at: dt.datetime = strawberry.field(description="When it was queued.")
    finished_at: dt.datetime | None = strawberry.field(
        description="When it succeeded or died; null while it may still run."
    )

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(
            id=row.id,
            kind=row.kind,
            status=JobStatus(row.status),
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            run_at=row.run_at,
            last_error=row.last_error,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


@strawberry.input(description="The job to run again.")
class RetryJobInput:
    id: relay.GlobalID = strawberry.field(description="Id of a FAILED or DEAD job.")


@strawberry.type(description="The job, queued to run now.")
class RetryJobPayload:
    job: Job = strawberry.field(description="The job, QUEUED with a fresh set of attempts.")


@strawberry.type
class Query:
    @query(
        operation=jobs.list_jobs,
        description="Background jobs of the current organization, newest first; by default "
        "the ones that need attention (FAILED and DEAD).",
    )
    async def jobs(
        self,
        info: Info,
        status: Annotated[
            JobStatus | None,
            strawberry.argument(description="Only jobs in this state (default FAILED and DEAD)."),
        ] = None,
        kind: Annotated[
            str | None, strawberry.argument(description="Only jobs of this kind.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Job]:
        page = await jobs.list_jobs(
            info.context,
            status=None if status is None else status.value,
            kind=kind,
            first=first,
            after=after,
        )
        return Connection.of(page, Job.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=jobs.retry_job,
        description="Run a FAILED or DEAD job again now, with a fresh set of attempts.",
    )
    async def retry_job(self, info: Info, input: RetryJobInput) -> RetryJobPayload:
        row = await jobs.retry_job(info.context, job_id=decode_id(input.id, "Job"))
        return RetryJobPayload(job=Job.from_row(row))
