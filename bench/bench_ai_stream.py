"""AI streaming through the gateway, against the same sandbox asked directly.

Three processes: the OpenAI sandbox (uvicorn), the gateway (uvicorn, one process,
per-message deflate off) whose system OpenAI key points at that sandbox, and this
driver (the clients).

1. Time to first chunk, sequential, interleaved: the `openai` SDK streaming straight
   from the sandbox, against a `chatCompletion` subscription on an open
   graphql-transport-ws connection to the gateway (which itself streams from the
   sandbox with the SDK). Prints both medians and the median overhead (target ≤ 2 ms).
2. N concurrent subscriptions (default 300) at R tokens/s (default 50) of T tokens
   (default 100): each stream's duration against the ideal T/R seconds. Target: the
   median and p95 stream within 10 % of the ideal.

    .venv/bin/python bench/bench_ai_stream.py [--streams 300] [--rate 50] [--tokens 100]
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
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import websockets  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

STREAM = """subscription($input: CreateChatCompletionInput!) {
  chatCompletion(input: $input) { delta index finishReason usage { completionTokens } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}
    )


async def wait_up(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Socket:
    """One graphql-transport-ws connection; subscriptions run one after another."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token, self.ws, self.seq = url, token, None, 0

    async def open(self) -> None:
        self.ws = await websockets.connect(
            self.url, subprotocols=["graphql-transport-ws"], compression=None, max_queue=None
        )
        await self.ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            )
        )
        assert json.loads(await self.ws.recv())["type"] == "connection_ack"

    async def stream(self, variables: dict[str, Any]) -> tuple[float, float, int]:
        """(seconds to first non-empty delta, seconds to complete, tokens billed)."""
        assert self.ws is not None
        self.seq += 1
        op = str(self.seq)
        t0 = time.perf_counter()
        await self.ws.send(
            json.dumps(
                {
                    "id": op,
                    "type": "subscribe",
                    "payload": {"query": STREAM, "variables": variables},
                }
            )
        )
        first = None
        tokens = 0
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") != op:
                continue
            if message["type"] == "complete":
                return (first or 0.0), time.perf_counter() - t0, tokens
            payload = message["payload"]
            if message["type"] == "error" or payload.get("errors"):
                raise RuntimeError(f"stream failed: {payload}")
            chunk = payload["data"]["chatCompletion"]
            if first is None and chunk["delta"]:
                first = time.perf_counter() - t0
            if chunk["usage"]:
                tokens = chunk["usage"]["completionTokens"]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def direct_first_chunk(
    client: AsyncOpenAI, messages: list[dict[str, str]], max_tokens: int
) -> float:
    t0 = time.perf_counter()
    first = None
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_tokens=max_tokens, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    return first or 0.0


async def bench_database(kind: str) -> tuple[str, Any]:
    """A fresh store for the run, and how to drop it."""
    if kind == "sqlite":
        path = Path(tempfile.mkdtemp()) / "bench.sqlite3"

        async def nothing() -> None:
            return None

        return f"sqlite://{path}", nothing
    import asyncpg

    admin = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    name = f"sb_bench_{os.getpid()}"
    conn = await asyncpg.connect(admin.replace("postgres://", "postgresql://", 1))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(admin.replace("postgres://", "postgresql://", 1))
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()

    # A pool sized for hundreds of concurrent streams (Tortoise defaults to 5 connections).
    return f"{admin.rsplit('/', 1)[0]}/{name}?minsize=10&maxsize=60", drop


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--coalesce-ms", type=float, default=0.0)
    parser.add_argument(
        "--ttfc-rate",
        type=float,
        default=None,
        help="sandbox tokens/s while timing the first chunk (default: --rate)",
    )
    parser.add_argument(
        "--database",
        default="postgres",
        choices=["postgres", "sqlite"],
        help="the gateway's store (PostgreSQL at TEST_POSTGRES_URL, as deployed at scale)",
    )
    args = parser.parse_args()

    sandbox_port, gateway_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    database_url, drop = await bench_database(args.database)
    env = {
        "SWITCHBOARD_ENV": "test",
        "DATABASE_URL": database_url,
        "PUBLIC_URL": gateway_url,
        "OPENAI_API_KEY": "sk-bench-system-key",
        "OPENAI_BASE_URL": f"{sandbox_url}/v1",
        "OPENAI_MAX_CONCURRENT_REQUESTS": str(max(50, args.streams * 2)),
        "OPENAI_REQUESTS_PER_MINUTE": "1000000",
        "AI_MONTHLY_TOKEN_QUOTA": str(10**12),
        "AI_STREAM_COALESCE_MS": str(args.coalesce_ms),
        "RATE_LIMIT_AUTHENTICATED": "1000000/hour",
        "RATE_LIMIT_ANONYMOUS": "1000000/hour",
        "LOG_LEVEL": "WARNING",
        "RUN_WORKER": "false",
    }
    # Tables straight from the models (as the tests build them).
    from tortoise import Tortoise

    from gateway import db
    from gateway.settings import load_settings

    await db.open_store(load_settings(database_url=env["DATABASE_URL"], switchboard_env="test"))
    await Tortoise.generate_schemas()
    await db.close_store()

    procs = [
        start(
            "import uvicorn; from providers.sandbox.openai import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={sandbox_port}, "
            "log_level='warning', lifespan='off')",
            {},
        ),
        start(
            "import uvicorn; from gateway.app import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={gateway_port}, "
            "log_level='warning', ws_per_message_deflate=False, ws_max_queue=100000)",
            env,
        ),
    ]
    try:
        await wait_up(f"{sandbox_url}/_sandbox/stats")
        await wait_up(f"{gateway_url}/health/live")
        await run(args, sandbox_url, gateway_url)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        await drop()


async def run(args: argparse.Namespace, sandbox_url: str, gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as http:
        body = (
            await http.post(
                "/graphql",
                json={
                    "query": "mutation($i: RegisterOrganizationInput!) "
                    "{ registerOrganization(input: $i) { accessToken } }",
                    "variables": {
                        "i": {
                            "organizationName": "Bench",
                            "email": f"bench-{time.time_ns()}@example.com",
                            "password": "correct horse battery staple",
                        }
                    },
                },
            )
        ).json()
        token = body["data"]["registerOrganization"]["accessToken"]
        control = f"{sandbox_url}/_sandbox/stream"

        # 1. Time to first chunk ------------------------------------------------------
        ttfc_rate = args.rate if args.ttfc_rate is None else args.ttfc_rate
        await http.post(control, json={"tokens_per_second": ttfc_rate})
        ws_url = gateway_url.replace("http://", "ws://") + "/graphql"
        sock = Socket(ws_url, token)
        await sock.open()
        direct = AsyncOpenAI(api_key="sk-bench-direct", base_url=f"{sandbox_url}/v1", max_retries=0)
        messages = [{"role": "user", "content": "Say something short."}]
        variables = {
            "input": {
                "messages": [{"role": "USER", "content": messages[0]["content"]}],
                "maxTokens": 8,
            }
        }
        for _ in range(10):  # warm both paths
            await direct_first_chunk(direct, messages, 8)
            await sock.stream(variables)
        gw_samples, direct_samples, diffs = [], [], []
        for _ in range(args.samples):
            d = await direct_first_chunk(direct, messages, 8)
            g, _, _ = await sock.stream(variables)
            direct_samples.append(d)
            gw_samples.append(g)
            diffs.append(g - d)
        await sock.close()
        await direct.close()
        print(
            f"time to first chunk (sequential, interleaved, n={args.samples}, "
            f"sandbox at {ttfc_rate:g} tokens/s)"
        )
        print(
            "  direct SDK -> sandbox        median "
            f"{statistics.median(direct_samples) * 1000:7.2f} ms"
        )
        print(
            f"  gateway WS -> SDK -> sandbox median {statistics.median(gw_samples) * 1000:7.2f} ms"
        )
        overhead = statistics.median(gw_samples) - statistics.median(direct_samples)
        print(
            f"  median overhead {overhead * 1000:.2f} ms (median of paired differences "
            f"{statistics.median(diffs) * 1000:.2f} ms; target <= 2 ms)"
        )

        # 2. Many concurrent streams at a fixed token rate ------------------------------
        await http.post(control, json={"tokens_per_second": args.rate})
        sockets = [Socket(ws_url, token) for _ in range(args.streams)]
        for i in range(0, len(sockets), 50):
            await asyncio.gather(*(s.open() for s in sockets[i : i + 50]))
        stream_vars = [
            {
                "input": {
                    "messages": [{"role": "USER", "content": f"Stream {i}"}],
                    "maxTokens": args.tokens,
                }
            }
            for i in range(args.streams)
        ]
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(s.stream(v) for s, v in zip(sockets, stream_vars, strict=True))
        )
        wall = time.perf_counter() - t0
        await asyncio.gather(*(s.close() for s in sockets))
        billed = {r[2] for r in results}
        # The sandbox answers 24-64 tokens (capped by maxTokens): each stream's own ideal.
        ratios = [r[1] / (r[2] / args.rate) for r in results if r[2]]
        print(
            f"{args.streams} concurrent streams, up to {args.tokens} tokens at {args.rate:g} "
            "tokens/s, one gateway process"
        )
        print(
            "  stream duration / its ideal (tokens / rate): "
            f"median {statistics.median(ratios):.3f}x, "
            f"p95 {percentile(ratios, 95):.3f}x, max {max(ratios):.3f}x; "
            f"all {args.streams} done in {wall:.3f} s"
        )
        print(f"  completion tokens per stream: {min(billed)}-{max(billed)}")
        within = sum(1 for r in ratios if r <= 1.10)
        print(f"  streams within 10 % of ideal: {within}/{len(ratios)}")


if __name__ == "__main__":
    asyncio.run(main())
