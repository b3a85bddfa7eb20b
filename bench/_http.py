"""Over-HTTP measurement, as a user meets the gateway: a server process pinned to one core
(uvicorn with uvloop and httptools, as `switchboard serve` runs) and `wrk` pinned to the
other, one server at a time, alternating rounds so background load hits every side alike.

Needs `wrk` (Debian: `apt-get install wrk`) and `taskset` (util-linux). On a machine with
one core both share it, and the figures say so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVER_CPU, LOAD_CPU = "0", "1" if (os.cpu_count() or 1) > 1 else "0"


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("over-HTTP figures need wrk: apt-get install wrk (or pass --no-http)")
    return wrk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


@contextmanager
def server(argv: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `argv` (a server listening on `port`) pinned to the server core until ready."""
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}", **(env or {})}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        pinned(SERVER_CPU, argv), cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-3000:]}")
            try:
                # Up means answering: the gateway listens before its start-up (migrations,
                # worker) is done, and a load generator must not measure that.
                post_json(f"{url}/graphql", {"query": "{ __typename }"})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start in 60 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def uvicorn_argv(target: str, port: int, factory: bool = False) -> list[str]:
    """A plain uvicorn server for a baseline app, with the options `switchboard serve` uses."""
    argv = [PYTHON, "-m", "uvicorn", target, "--port", str(port), "--no-access-log"]
    argv += ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    return argv + (["--factory"] if factory else [])


def post_json(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wrk(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    seconds: float = 5.0,
    connections: int = 16,
) -> dict[str, float]:
    """Requests/second and latency of POSTing `body` as JSON to `url`, from the load core."""
    lua = f"wrk.method = 'POST'\nwrk.body = {_lua_string(json.dumps(body))}\n"
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        lua += f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}\n"
    lua += (
        "done = function(summary, latency, requests)\n"
        "  io.write(string.format('BENCH %d %d %d %d %d\\n', summary.requests,"
        " summary.errors.status + summary.errors.connect + summary.errors.read"
        " + summary.errors.write + summary.errors.timeout,"
        " latency:percentile(50), latency:percentile(99), summary.duration))\n"
        "end\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        argv = [
            require_wrk(),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            script.name,
            url,
        ]
        out = subprocess.run(
            pinned(LOAD_CPU, argv), capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(script.name)
    match = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if not match:
        raise SystemExit(f"wrk said: {out}")
    requests, errors, p50, p99, duration = map(int, match.groups())
    if errors:
        raise SystemExit(f"wrk saw {errors} errors of {requests} requests against {url}")
    return {"rps": requests / (duration / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000}


def _lua_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
