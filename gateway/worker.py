"""The background runtime of a process: event bus, outbox relay, job worker, periodic jobs.

Started by `gateway/app.py`'s lifespan (the worker part only when `RUN_WORKER` is on)
and by `switchboard worker` alone. Shell module: may import anything.

- Relay: wakes on a post-commit nudge from `emit()`, and polls every
  `OUTBOX_POLL_SECONDS` for rows a crash left unpublished.
- Worker: claims due jobs with a lease (`JOB_LEASE_SECONDS`), renews the lease while a
  handler runs, runs up to `WORKER_CONCURRENCY` jobs at once. A killed worker's jobs
  come back when their lease expires.
- Periodic jobs: each process enqueues the current slot of every `@periodic` job under
  a unique key, so a slot runs once whatever the number of processes.
- Health probes (given the app's `services`, every `HEALTH_PROBE_SECONDS`, 0: off): each
  serving process probes the providers' system credentials itself, not through the job
  queue, since health reports what this process saw (resolvers/health.py).
- Shutdown: stop claiming, let running jobs finish within
  `WORKER_SHUTDOWN_GRACE_SECONDS`, give the rest back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import uuid
from collections.abc import Iterable

from gateway import job_runs
from kit.bus import EventBus, create_bus
from kit.settings import Settings
from models.jobs import Job
from resolvers import events, handlers, health, jobs
from resolvers.context import Services

STOP_TIMEOUT_SECONDS = 5.0
log = logging.getLogger("switchboard.worker")


def load_handlers(extra_modules: Iterable[str] = ()) -> None:
    """Import the modules that register job handlers, periodic jobs and event listeners:
    the explicit list in `resolvers/handlers.py`, plus any the operator names."""
    handlers.load()
    for name in extra_modules:
        importlib.import_module(name)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        run_jobs: bool | None = None,
        services: Services | None = None,
    ) -> None:
        self.settings = settings
        self.services = services  # the app's: its provider registry is what health reads
        self.run_jobs = settings.run_worker if run_jobs is None else run_jobs
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.bus: EventBus | None = None
        self._relay_wake = asyncio.Event()
        self._job_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[asyncio.Task[None], Job] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        # What jobs use (mail sends through the provider registry): the app's services,
        # or in a worker process of its own, services built here and closed at stop().
        self._own_services: Services | None = None

    # lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        handlers.load()
        if self.run_jobs and self.services is None and self._own_services is None:
            from gateway.app import build_services  # the app factory imports this module

            self._own_services = build_services(self.settings)
        self.bus = create_bus(self.settings.redis_url, prefix=self.settings.redis_key_prefix)
        events.install_bus(self.bus)
        events.add_nudge(self._relay_wake.set)
        self._tasks.append(asyncio.create_task(self._relay_loop(), name="outbox-relay"))
        if self.services is not None and self.settings.health_probe_seconds > 0:
            probes = self._probe_loop(self.services)
            self._tasks.append(asyncio.create_task(probes, name="health-probes"))
        if self.run_jobs:
            jobs.add_waker(self._job_wake.set)
            self._tasks.append(asyncio.create_task(self._worker_loop(), name="job-worker"))
            self._tasks.append(asyncio.create_task(self._periodic_loop(), name="periodic-jobs"))
            # Apart from the other loops: it keeps leases alive while stop() drains.
            self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="job-leases")
        log.info(
            "background runtime started",
            extra={"worker_id": self.worker_id, "jobs": self.run_jobs},
        )

    async def stop(self) -> None:
        self._stopping.set()
        self._relay_wake.set()
        self._job_wake.set()
        events.remove_nudge(self._relay_wake.set)
        jobs.remove_waker(self._job_wake.set)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A loop caught mid-call by the cancellation has seconds to unwind, not forever:
            # shutdown must end (seen: the relay's first query at start-up never returning).
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in stuck:
                log.warning("%s did not stop when cancelled; leaving it", task.get_name())
        self._tasks.clear()
        await self._drain()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._heartbeat
            self._heartbeat = None
        if self.bus is not None:
            await self.bus.close()
            events.install_bus(None)
            self.bus = None
        if self._own_services is not None and self._own_services.providers is not None:
            await self._own_services.providers.aclose()
            self._own_services = None

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def _drain(self) -> None:
        if not self._inflight:
            return
        grace = self.settings.worker_shutdown_grace_seconds
        log.info("waiting up to %ss for %s running job(s)", grace, len(self._inflight))
        _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            # A job that does not unwind when cancelled is left, not waited on forever.
            _, stuck = await asyncio.wait(pending, timeout=STOP_TIMEOUT_SECONDS)
            for task in stuck:
                log.warning("%s did not stop when cancelled; leaving it", task.get_name())

    # relay --------------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        interval = self.settings.outbox_poll_seconds
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._relay_wake.wait(), interval)
            self._relay_wake.clear()
            try:
                while await events.relay_once() and not self._stopping.is_set():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay pass failed")

    # health probes ------------------------------------------------------------------

    async def _probe_loop(self, services: Services) -> None:
        interval = self.settings.health_probe_seconds
        while not self._stopping.is_set():
            try:
                await health.probe_providers(services)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health probe round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    # jobs ---------------------------------------------------------------------------

    async def _worker_loop(self) -> None:
        interval = self.settings.job_poll_seconds
        capacity = self.settings.worker_concurrency
        while not self._stopping.is_set():
            free = capacity - len(self._inflight)
            claimed: list[Job] = []
            if free > 0:
                try:
                    claimed = await job_runs.claim(
                        self.worker_id, limit=free, lease_seconds=self.settings.job_lease_seconds
                    )
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("claiming jobs failed")
            for job in claimed:
                task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                self._inflight[task] = job
                task.add_done_callback(self._job_done)
            if claimed and len(self._inflight) < capacity:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._job_wake.wait(), interval)
            self._job_wake.clear()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._job_wake.set()  # a slot is free

    async def _run(self, job: Job) -> None:
        try:
            await job_runs.run_claimed(
                job, self.worker_id, self.settings, self.services or self._own_services
            )
        except asyncio.CancelledError:
            # Shutdown past the grace period, or the lease was lost: back to the queue
            # (a no-op when another worker holds the job now: the write is fenced).
            with contextlib.suppress(Exception):
                await job_runs.release(job)
            raise
        except Exception:
            # The outcome could not be written (store down): the lease runs out and the
            # job is tried again, so handlers must tolerate running twice.
            log.exception("job %s: its outcome could not be recorded", job.id)

    async def _heartbeat_loop(self) -> None:
        """Renew the leases of every running job of this process, in one go."""
        lease = self.settings.job_lease_seconds
        while True:  # until stop() cancels it, after the drain
            await asyncio.sleep(max(0.2, lease / 3))
            running = dict(self._inflight)
            if not running:
                continue
            try:
                held = await job_runs.extend_leases(list(running.values()), lease)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store hiccup: keep running; a lapsed lease shows at the fenced write.
                log.warning("could not renew job leases", exc_info=True)
                continue
            for task, job in running.items():
                if job.id not in held and not task.done():
                    log.warning("lost the lease of job %s; stopping it", job.id)
                    task.cancel()

    async def _periodic_loop(self) -> None:
        seen: set[int] = set()
        while not self._stopping.is_set():
            specs = list(jobs.PERIODICS.values())
            tick = 30.0
            if specs:
                shortest = min(s.every.total_seconds() for s in specs)
                tick = max(0.5, min(30.0, shortest / 4))
                try:
                    ids = {job.id for job in await job_runs.schedule_periodics()}
                    if ids - seen:
                        self._job_wake.set()
                    seen = ids
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("scheduling periodic jobs failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), tick)
