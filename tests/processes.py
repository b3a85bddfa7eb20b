"""Real gateway processes for multi-process tests: `switchboard worker` and `switchboard serve`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def process_env(database_url: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in _KEEP}
    env.update(
        {
            "SWITCHBOARD_ENV": "test",
            "DATABASE_URL": database_url,
            "LOG_JSON": "false",
            "LOG_LEVEL": "WARNING",
            "GC_FREEZE": "false",
            "RATE_LIMIT_AUTHENTICATED": "100000/hour",
            "RATE_LIMIT_ANONYMOUS": "100000/hour",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


_KEEP = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"}


class Proc:
    """A child process whose output goes to a file (read on failure)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for_output(self, text: str, limit: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while text not in self.output():
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.output()}")
            if loop.time() > deadline:
                raise AssertionError(f"no {text!r} in output:\n{self.output()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a crashed host."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    async def stop(self, limit: float = 30) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.popen.poll() is None:
            if loop.time() > deadline:
                self.popen.kill()
                self.popen.wait(10)
                raise AssertionError(f"did not stop on SIGTERM:\n{self.output()}")
            await asyncio.sleep(0.1)
        self._out.close()
        return self.popen.returncode


def start_worker(env: dict[str, str], log: Path, *imports: str) -> Proc:
    args = [SWITCHBOARD, "worker"]
    for module in imports:
        args += ["--import", module]
    return Proc(args, env, log)


async def start_server(env: dict[str, str], log: Path, port: int) -> Proc:
    proc = Proc([SWITCHBOARD, "serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    async with httpx.AsyncClient() as client:
        while True:
            if proc.popen.poll() is not None:
                raise AssertionError(f"server exited early:\n{proc.output()}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            if loop.time() > deadline:
                proc.kill()
                raise AssertionError(f"server did not come up:\n{proc.output()}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def two_gateways(
    store: Any, redis_url: str, tmp_path: Path, key_prefix: str
) -> AsyncIterator[tuple[str, str]]:
    """Two `switchboard serve` processes on one PostgreSQL store and one Redis bus (the
    test skips on SQLite, a file two processes do not share); their base URLs. Both must
    stop cleanly, with no traceback in either's output."""
    from tests.conftest import free_port

    if store.kind != "postgres":
        pytest.skip("several gateway processes share PostgreSQL, not a SQLite file")
    env = process_env(
        store.url, redis_url=redis_url, redis_key_prefix=key_prefix, run_worker="false"
    )
    ports = [free_port(), free_port()]
    servers = [await start_server(env, tmp_path / f"s{i}.log", p) for i, p in enumerate(ports)]
    try:
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    finally:
        codes = [await s.stop() for s in servers]
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done.
    assert set(codes) <= {0, -15}, codes
    assert not any("Traceback" in s.output() for s in servers), [s.output() for s in servers]


async def redis_subscribed(redis_url: str, channel: str, what: str) -> None:
    """Wait until some process listens on `channel` of the Redis bus."""
    import redis.asyncio as aioredis

    from tests.conftest import eventually

    r = aioredis.from_url(redis_url)
    try:

        async def subscribed() -> bool:
            return int((await r.pubsub_numsub(channel))[0][1]) > 0

        await eventually(subscribed, what)
    finally:
        await r.aclose()
