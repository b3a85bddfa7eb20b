"""The provider layer's cost against a bare aiohttp session, same endpoint, same run.

The Resend sandbox runs in its own uvicorn process pinned to one core (`taskset -c 0`)
and this client is pinned to the other (core 1), as the issue measures: the server
and the load do not fight over one core. Both sides call `GET /emails/{id}` with the
same concurrency and connection pool:

- bare: one aiohttp.ClientSession, `async with session.get(...)`, read the body and
  parse the JSON;
- layer: the same request through `ProviderHTTP.request` (what `ResendClient.get_email`
  calls), with everything configured but not triggering — breaker, outbound rate
  limit, retries, timeouts, metrics — and the JSON parsed as the bare side does.
  Breaker store: memory, or Redis with `--redis` (then the closed state is cached
  for `cache_ttl`, so Redis is asked a few times a second, not per call).

Rounds are paired (bare then layer, then layer then bare, ...). Each round prints both
ratios, then the median and the spread:

- the headline, "layer / bare": bare CPU per call / layer CPU per call, client side
  (`time.process_time`): the layer's cost relative to the bare call, which is what
  the issue means. It is the throughput ratio whenever the client's core is the
  limit — as it is when core 0 is free: the sandbox then answers faster than one core
  of client asks — and what the layer costs a gateway process per call. It is steady
  on a shared machine;
- calls per second, layer / bare: a stopwatch's view. When another process takes
  part of core 0, the sandbox's core becomes the limit for both sides (the client
  partly idle) and this ratio says nothing of the layer; when one lands on core 1 for
  part of one side's round, it skews that round's ratio.

Targets and last figures: bench/README.md.

    .venv/bin/python bench/bench_provider_overhead.py [--calls 10000] [--concurrency 32]
        [--rounds 5] [--redis redis://127.0.0.1:6379/0] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _http import LOAD_CPU, SERVER_CPU, pinned  # noqa: E402

from kit.ratelimit import RateLimiter  # noqa: E402
from providers.breaker import BreakerPolicy, make_breaker_store  # noqa: E402
from providers.http import ProviderConfig, ProviderHTTP, Timeouts  # noqa: E402
from providers.resend import ResendClient  # noqa: E402
from providers.resend import parse_error as resend_parse_error  # noqa: E402
from providers.retry import RetryPolicy  # noqa: E402

KEY = "re_bench_key_000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{url}/_sandbox/stats") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("sandbox did not start")


async def drive(call, calls: int, concurrency: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(calls per second, client CPU microseconds per call)."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return calls / elapsed, cpu / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="")
    parser.add_argument("--uvloop", action="store_true", help="the client on uvloop, as serve runs")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # the client on the load core

    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        pinned(SERVER_CPU, [
            sys.executable, "-m", "uvicorn", "--factory",
            "providers.sandbox.resend:create_app",
            "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--lifespan", "off",
        ]),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        await wait_up(url)
        pool = args.concurrency
        async with aiohttp.ClientSession() as s:
            r = await s.post(
                f"{url}/emails",
                json={"from": "a@acme.test", "to": "b@example.com", "subject": "x", "text": "y"},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            email_id = (await r.json())["id"]
        target = f"{url}/emails/{email_id}"

        bare_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool),
            timeout=aiohttp.ClientTimeout(total=30, connect=5, sock_read=20),
        )
        headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}

        async def bare() -> None:
            async with bare_session.get(target, headers=headers) as resp:
                body = await resp.read()
                assert resp.status == 200
                assert json.loads(body)["id"] == email_id  # the layer parses the JSON too

        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        config = ProviderConfig(
            name="resend",
            timeouts=Timeouts(connect=5, read=20, total=30),
            pool_size=pool,
            concurrency=pool,
            rate_limit="20000/second",  # configured, far above what one process reaches
            retry=RetryPolicy(max_attempts=4, base=0.2, cap=5, budget=30),
            breaker=BreakerPolicy(threshold=5, cooldown=30),
        )
        http = ProviderHTTP(
            config,
            breakers=make_breaker_store(args.redis, prefix=prefix),
            limiter=RateLimiter(args.redis, prefix=prefix),
        )
        client = ResendClient(http, KEY, base_url=url)

        async def layer() -> None:
            # The same request through the layer; the JSON parsed as the bare side does.
            response = await http.request(
                "GET", target, operation="get_email", credential=KEY, headers=headers,
                parse_error=resend_parse_error,
            )  # fmt: skip
            assert response.json()["id"] == email_id

        async def client_call() -> None:
            email = await client.get_email(email_id)
            assert email.id == email_id

        await drive(bare, 500, pool)  # warm both pools
        await drive(layer, 500, pool)
        await drive(client_call, 500, pool)  # the Resend client end to end works too
        rows = []
        for i in range(args.rounds):
            # Alternate which side goes first, so drift in machine load cancels out.
            if i % 2 == 0:
                b, b_cpu = await drive(bare, args.calls, pool)
                ly, ly_cpu = await drive(layer, args.calls, pool)
            else:
                ly, ly_cpu = await drive(layer, args.calls, pool)
                b, b_cpu = await drive(bare, args.calls, pool)
            rows.append((b, ly, b_cpu, ly_cpu))
            print(
                f"round {i + 1}: bare {b:6.0f} calls/s {b_cpu:5.1f} us CPU/call | "
                f"layer {ly:6.0f} calls/s {ly_cpu:5.1f} us CPU/call | "
                f"layer / bare {b_cpu / ly_cpu:4.2f} (calls/s {ly / b:4.2f})"
            )
        await bare_session.close()
        await http.aclose()
        await http.breakers.aclose()
        store = "redis" if args.redis else "memory"
        cpu_ratios = [r[2] / r[3] for r in rows]
        rate_ratios = [r[1] / r[0] for r in rows]
        bare_cpu = statistics.median(r[2] for r in rows)
        layer_cpu = statistics.median(r[3] for r in rows)
        print(
            f"median of {args.rounds} paired rounds, {args.calls} calls x {pool} concurrent, "
            f"breaker+limiter on {store}, client loop {loop_name}:"
        )
        print(
            f"  bare aiohttp   {statistics.median(r[0] for r in rows):7.0f} calls/s  "
            f"{bare_cpu:5.1f} us CPU/call (client)"
        )
        print(
            f"  provider layer {statistics.median(r[1] for r in rows):7.0f} calls/s  "
            f"{layer_cpu:5.1f} us CPU/call (client), +{layer_cpu - bare_cpu:.1f} us"
        )
        print(
            f"  layer / bare (CPU per call)  {statistics.median(cpu_ratios):4.2f} x, rounds "
            f"{min(cpu_ratios):4.2f}-{max(cpu_ratios):4.2f}  (target >= 0.90 every round)"
        )
        print(
            f"  layer / bare (calls/s)       {statistics.median(rate_ratios):4.2f} x, rounds "
            f"{min(rate_ratios):4.2f}-{max(rate_ratios):4.2f}"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    asyncio.run(main())
