"""A periodic job for the two-worker test (imported only by `switchboard worker` subprocesses)."""

from __future__ import annotations

import datetime as dt
import os

from resolvers.jobs import JobContext, periodic
from tests.job_handlers import record

TICK_FILE = os.environ.get("TEST_TICK_FILE", "")


@periodic("test-tick", every=dt.timedelta(seconds=1))
async def tick(ctx: JobContext, payload: dict) -> None:
    if TICK_FILE:
        record(TICK_FILE, f"{payload['slot']} {ctx.worker_id}")
