"""Job handlers used by the job tests, in this process and in `switchboard worker` subprocesses
(`switchboard worker --import tests.job_handlers`).

Handlers record each execution as one line appended to the file named in the payload
(short O_APPEND writes do not interleave), so a test counts executions across processes.
"""

from __future__ import annotations

import asyncio
import os

from resolvers.jobs import JobContext, job_handler


def record(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job_handler("test.count", max_attempts=3, backoff=[0.2])
async def count(ctx: JobContext, payload: dict) -> None:
    record(payload["path"], f"{ctx.job_id} {ctx.worker_id} {ctx.attempt}")


@job_handler("test.block_first_try", max_attempts=3, backoff=[0.2])
async def block_first_try(ctx: JobContext, payload: dict) -> None:
    """Blocks forever on its first try (the test kills the worker); succeeds after that."""
    record(payload["path"], f"{ctx.job_id} {ctx.worker_id} {ctx.attempt}")
    if ctx.attempt == 1:
        await asyncio.Event().wait()
