"""AI streaming through the gateway, against the same sandbox asked directly.

Three processes: the OpenAI sandbox (uvicorn), the gateway (uvicorn, one process,
per-message deflate off) whose system OpenAI key points at that sandbox, and this
driver (the clients).

1. Time to first chunk, sequential, interleaved: the `openai` SDK streaming straight
   from the sandbox, against a `chatCompletion` subscription on an open
   graphql-transport-ws connection to the gateway (which itself streams from the
   sandbox with the SDK). Prints both medians and the median overhead (target ≤ 2 ms).
2. N concurrent subscriptions (default 300) at R tokens/s (default 50), each answer T
   tokens long (default 500, a chat answer of ~10 s; the sandbox's `answer_tokens`, and
   `maxTokens`): each stream's duration from the moment its subscription was sent to
   its `complete` message, against the ideal T/R seconds (the headline; target: median
   and p95 within 10 %), and from its first delta to `complete` against (T-1)/R (the
   steady streaming alone, without the set-up). All start at once unless `--ramp S`
   spreads the starts evenly over S seconds (each duration counts from its own start).
   Each stream's first delta counts from its subscription; the baseline is the same burst
   sent first straight to the sandbox with the SDK from this driver (its first chunks).

Both phases print the CPU each process used (sandbox, gateway, this driver: a client
that is itself saturated would spoil the figures), and phase 2 prints when the upstream
requests reached the sandbox (from its own record) and how many subscription events a
stream took. `--profile DIR` records the gateway and the sandbox with py-spy during
phase 2 (collapsed stacks). `--trace` has the gateway time-stamp each stream's stages
(subscribe received, plan done, upstream request arrived at the sandbox, first chunk
from upstream, prompt rows stored, first and last event) and prints their spread.

    .venv/bin/python bench/bench_ai_stream.py [--streams 300] [--rate 50] [--tokens 500]
        [--ramp 0] [--coalesce-ms MS] [--database postgres|sqlite] [--processes 1]
        [--no-burst-baseline] [--profile DIR] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
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

from bench._util import create_scratch_database  # noqa: E402

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


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), with its children's
    when asked (the gateway's worker processes, when it runs several)."""
    total = 0.0
    stats = Path("/proc").glob("[0-9]*/stat") if children else [Path(f"/proc/{pid}/stat")]
    for stat in stats:
        try:
            values = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, ...
        except OSError:
            continue
        if stat.parent.name == str(pid) or values[1] == str(pid):
            total += (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")
    return total


class CpuMeter:
    """CPU used by each process (sandbox, gateway, this driver) over a phase, as a share
    of the wall time: 1.0 = one core busy the whole phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.perf_counter()
        self.start = {name: cpu_seconds(pid, name == "gateway") for name, pid in pids.items()}

    def report(self) -> str:
        wall = time.perf_counter() - self.t0
        used = {
            name: cpu_seconds(pid, name == "gateway") - self.start[name]
            for name, pid in self.pids.items()
        }
        return ", ".join(f"{name} {used[name]:.2f} s ({used[name] / wall:.0%})" for name in used)


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

    async def stream(self, variables: dict[str, Any]) -> tuple[float, float, int, int, float]:
        """(seconds to first non-empty delta, seconds to complete, tokens billed, events,
        wall-clock time the subscription was sent)."""
        assert self.ws is not None
        self.seq += 1
        op = str(self.seq)
        sent = time.time()
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
        tokens = events = 0
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") != op:
                continue
            if message["type"] == "complete":
                return (first or 0.0), time.perf_counter() - t0, tokens, events, sent
            payload = message["payload"]
            if message["type"] == "error" or payload.get("errors"):
                raise RuntimeError(f"stream failed: {payload}")
            chunk = payload["data"]["chatCompletion"]
            events += 1
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


async def direct_burst(sandbox_url: str, count: int, tokens: int, ramp: float) -> list[float]:
    """Seconds to the first chunk of each of `count` SDK streams started at once (or over
    `ramp` seconds), each read to its end as the gateway's are."""
    import openai

    # The SDK's aiohttp transport, as the gateway's client uses (the default httpx one
    # costs several times its CPU per chunk: that driver would be the bottleneck).
    client = AsyncOpenAI(
        api_key="sk-bench-direct", base_url=f"{sandbox_url}/v1", max_retries=0,
        http_client=openai.DefaultAioHttpClient(),
    )  # fmt: skip

    async def one(i: int) -> float:
        if ramp:
            await asyncio.sleep(ramp * i / count)
        t0 = time.perf_counter()
        first = None
        # The SDK's raw stream, its SSE lines read as JSON: no pydantic model per chunk
        # (as the gateway's provider reads them), which would make this driver's core,
        # busy with the early streams' chunks, delay the later streams' first ones.
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"Direct {i}"}],
            max_tokens=tokens, stream=True, stream_options={"include_usage": True},
        ) as response:  # fmt: skip
            async for line in response.iter_lines():
                if first is None and line.startswith("data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        first = time.perf_counter() - t0
        return first or 0.0

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await client.close()


async def bench_database(kind: str) -> tuple[str, Any]:
    """A fresh store for the run, and how to drop it."""
    admin = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    url, drop = await create_scratch_database(kind, admin)
    if kind == "sqlite":
        return url, drop
    # A pool sized for hundreds of concurrent streams (Tortoise defaults to 5 connections).
    return f"{url}?minsize=10&maxsize=60", drop


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument(
        "--tokens",
        type=int,
        default=500,
        help="each answer's length in tokens in phase 2 (the sandbox's answer_tokens and "
        "maxTokens; 500 = 10 s at 50 tokens/s)",
    )
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument(
        "--coalesce-ms",
        type=float,
        default=None,
        help="AI_STREAM_COALESCE_MS for the gateway (default: the gateway's own default)",
    )
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
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="start the concurrent subscriptions evenly over this many seconds instead of "
        "all at once (each stream's duration still counts from its own start)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="directory: record the gateway and the sandbox with py-spy during the "
        "concurrent phase (collapsed stacks, <dir>/gateway.txt and <dir>/sandbox.txt)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="gateway processes (uvicorn workers sharing the port and the store); "
        "--trace and --profile follow one process only",
    )
    parser.add_argument(
        "--no-burst-baseline",
        dest="burst_baseline",
        action="store_false",
        help="skip the direct SDK burst run before the gateway's (its first-chunk figures "
        "are the baseline of the burst's first delta)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="time-stamp each stream's stages inside the gateway and print their spread",
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
        "RATE_LIMIT_AUTHENTICATED": "1000000/hour",
        "RATE_LIMIT_ANONYMOUS": "1000000/hour",
        "LOG_LEVEL": "WARNING",
        "RUN_WORKER": "false",
    }
    if args.coalesce_ms is not None:
        env["AI_STREAM_COALESCE_MS"] = str(args.coalesce_ms)
    # Tables straight from the models (as the tests build them).
    from tortoise import Tortoise

    from kit.settings import load_settings
    from models import store as db

    await db.open_store(load_settings(database_url=env["DATABASE_URL"], switchboard_env="test"))
    await Tortoise.generate_schemas()
    await db.close_store()

    trace_file = str(Path(tempfile.mkdtemp()) / "trace.jsonl") if args.trace else ""
    args.trace_file = trace_file
    procs = [
        start(
            "import uvicorn; from providers.sandbox.openai import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={sandbox_port}, "
            "log_level='warning', lifespan='off')",
            {},
        ),
        start(
            (
                f"from bench.bench_ai_stream import install_trace; install_trace({trace_file!r}); "
                if trace_file
                else ""
            )
            + "import uvicorn; from gateway.app import create_app; "
            + (
                f"uvicorn.run(create_app(), host='127.0.0.1', port={gateway_port}, "
                if args.processes == 1
                # Several processes on one socket and one store, as deployed at scale.
                else f"uvicorn.run('gateway.app:create_app', factory=True, "
                f"workers={args.processes}, host='127.0.0.1', port={gateway_port}, "
            )
            + "log_level='warning', ws_per_message_deflate=False, ws_max_queue=100000)",
            env,
        ),
    ]
    try:
        await wait_up(f"{sandbox_url}/_sandbox/stats")
        await wait_up(f"{gateway_url}/health/live")
        pids = {"sandbox": procs[0].pid, "gateway": procs[1].pid, "clients": os.getpid()}
        await run(args, sandbox_url, gateway_url, pids)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        await drop()


def start_profiles(args: argparse.Namespace, pids: dict[str, int]) -> list[Any]:
    if not args.profile:
        return []
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    spies = []
    for name in ("gateway", "sandbox"):
        command = [spy, "record", "--pid", str(pids[name]), "--format", "raw", "--rate", "1000"]
        command += ["--nonblocking"]
        command += ["--output", str(out / f"{name}.txt")]
        spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return spies


def stop_profiles(spies: list[Any]) -> None:
    for spy in spies:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
    for spy in spies:
        spy.wait(30)


async def run(
    args: argparse.Namespace, sandbox_url: str, gateway_url: str, pids: dict[str, int]
) -> None:
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
        meter = CpuMeter(pids)
        for _ in range(args.samples):
            d = await direct_first_chunk(direct, messages, 8)
            g, *_ = await sock.stream(variables)
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
        print(f"  CPU: {meter.report()}")

        # 2. Many concurrent streams at a fixed token rate ------------------------------
        await http.post(
            control, json={"tokens_per_second": args.rate, "answer_tokens": args.tokens}
        )
        direct_first: list[float] = []
        if args.burst_baseline:
            # The same burst from this driver straight to the sandbox with the SDK: how
            # soon the first chunk can come at all when N streams start at once here.
            meter = CpuMeter(pids)
            direct_first = await direct_burst(sandbox_url, args.streams, args.tokens, args.ramp)
            print(
                f"{args.streams} concurrent streams straight from the SDK to the sandbox "
                f"(baseline): first chunk median {statistics.median(direct_first) * 1000:.0f} "
                f"ms, p95 {percentile(direct_first, 95) * 1000:.0f} ms; CPU: {meter.report()}"
            )
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
        await http.delete(f"{sandbox_url}/_sandbox/requests")
        if args.trace_file:
            Path(args.trace_file).write_text("")  # phase 1's streams are not in the spread
        spies = start_profiles(args, pids)
        meter = CpuMeter(pids)
        t0 = time.perf_counter()

        async def started(i: int, sock: Socket, variables: dict[str, Any]) -> Any:
            if args.ramp:
                await asyncio.sleep(args.ramp * i / args.streams)
            return await sock.stream(variables)

        results = await asyncio.gather(
            *(started(i, s, v) for i, (s, v) in enumerate(zip(sockets, stream_vars, strict=True)))
        )
        wall = time.perf_counter() - t0
        cpu = meter.report()
        stop_profiles(spies)
        await asyncio.gather(*(s.close() for s in sockets))
        await http.post(control, json={"answer_tokens": None})
        billed = {r[2] for r in results}
        # Each stream's own ideal from the tokens it was billed (= --tokens unless cut short).
        from_sub = [r[1] / (r[2] / args.rate) for r in results if r[2]]
        from_first = [(r[1] - r[0]) / ((r[2] - 1) / args.rate) for r in results if r[2] > 1]
        print(
            f"{args.streams} concurrent streams of {args.tokens} tokens at {args.rate:g} "
            f"tokens/s (ideal {args.tokens / args.rate:g} s), one gateway process, "
            + (f"started evenly over {args.ramp:g} s" if args.ramp else "all started at once")
        )
        print(
            "  subscribe sent -> complete, / (tokens / rate):         "
            f"median {statistics.median(from_sub):.3f}x, p95 {percentile(from_sub, 95):.3f}x, "
            f"max {max(from_sub):.3f}x; within 10 %: "
            f"{sum(1 for r in from_sub if r <= 1.10)}/{len(from_sub)}"
        )
        print(
            "  first delta received -> complete, / ((tokens-1) / rate): "
            f"median {statistics.median(from_first):.3f}x, p95 {percentile(from_first, 95):.3f}x, "
            f"max {max(from_first):.3f}x"
        )
        first = [r[0] for r in results]
        print(
            f"  first delta after subscribe: median {statistics.median(first) * 1000:.0f} ms, "
            f"p95 {percentile(first, 95) * 1000:.0f} ms, max {max(first) * 1000:.0f} ms; "
            f"all {args.streams} done in {wall:.3f} s"
        )
        if direct_first:
            print(
                "  first delta median / the direct burst's first chunk median: "
                f"{statistics.median(first) / statistics.median(direct_first):.2f}x "
                f"(+{(statistics.median(first) - statistics.median(direct_first)) * 1000:.0f} ms)"
            )
        print(
            f"  completion tokens per stream: {min(billed)}-{max(billed)}; subscription events "
            f"per stream: median {statistics.median(r[3] for r in results):g}"
        )
        print(f"  CPU: {cpu}")
        # Where the time went, from the sandbox's own record of each upstream request.
        recorded = (
            await http.get(f"{sandbox_url}/_sandbox/requests", params={"path": "/v1/chat"})
        ).json()["requests"]
        sent_at = {f"Stream {i}": r[4] for i, r in enumerate(results)}

        def key(entry: dict[str, Any]) -> str:
            return str(entry["body"]["messages"][-1]["content"])

        arrive = [r["at"] - sent_at[key(r)] for r in recorded]
        send = [r["finished_at"] - r["first_chunk_at"] for r in recorded if r.get("finished_at")]
        ideal = [r["chunks_sent"] / args.rate for r in recorded if r.get("finished_at")]
        print(
            f"  upstream requests reached the sandbox {percentile(arrive, 50) * 1000:.0f} ms "
            f"(median) / {percentile(arrive, 95) * 1000:.0f} ms (p95) / "
            f"{max(arrive) * 1000:.0f} ms (max) after their subscription was sent; "
            f"sandbox emit time / ideal: median "
            f"{statistics.median(a / b for a, b in zip(send, ideal, strict=True) if b):.3f}x"
        )
        if args.trace_file:
            report_trace(args.trace_file, sent_at, {key(r): r["at"] for r in recorded})


# Stage trace (--trace) ---------------------------------------------------------------------

STAGES = (
    ("subscribe", "subscribe message received"),
    ("resolver", "resolver started"),
    ("quota", "quota checked"),
    ("credential", "credential resolved"),
    ("plan", "plan done"),
    ("ids", "the rows' ids assigned"),
    ("upstream", "upstream request at the sandbox"),
    ("opened", "upstream response headers"),
    ("upstream_first", "first chunk from upstream"),
    ("stored", "prompt rows stored"),
    ("first_event", "first event yielded"),
    ("upstream_last", "last chunk from upstream"),
    ("settled", "answer and usage saved"),
    ("last_event", "last event yielded"),
    ("done", "resolver finished (answer saved)"),
)


def install_trace(path: str) -> None:
    """In the gateway process: record when each stream (keyed by its last prompt message)
    reaches each stage, one JSON line per stream when it ends. Wraps the resolver's and
    the provider's own functions, so it measures the code as it is."""
    import functools

    from strawberry.subscriptions.protocols.graphql_transport_ws import handlers

    import providers.openai as openai_provider
    import resolvers.ai as ai
    from resolvers.ai import plan as planning
    from resolvers.ai import prompts, streaming

    marks: dict[str, dict[str, float]] = {}

    def mark(key: Any, stage: str) -> None:
        marks.setdefault(str(key), {}).setdefault(stage, time.time())

    subscribe = handlers.BaseGraphQLTransportWSHandler.handle_subscribe

    @functools.wraps(subscribe)
    async def handle_subscribe(self: Any, message: Any) -> None:
        with contextlib.suppress(Exception):
            variables = message["payload"]["variables"]
            mark(variables["input"]["messages"][-1]["content"], "subscribe")
        await subscribe(self, message)

    handlers.BaseGraphQLTransportWSHandler.handle_subscribe = handle_subscribe  # type: ignore[method-assign]

    stream_chat_completion = ai.stream_chat_completion

    stream_key: contextvars.ContextVar[str] = contextvars.ContextVar("stream_key", default="")

    async def traced_stream(ctx: Any, request: Any) -> Any:
        key = request.messages[-1].content
        stream_key.set(key)  # the operation's own task: what it awaits sees the key
        mark(key, "resolver")
        last = None
        try:
            async for event in stream_chat_completion(ctx, request):
                mark(key, "first_event")
                last = time.time()
                yield event
        finally:
            if last is not None:
                marks[key]["last_event"] = last
            mark(key, "done")
            with open(path, "a") as out:
                out.write(json.dumps({"key": key, **marks.pop(key, {})}) + "\n")

    # The schema reads the operation's permission off the function it is given.
    traced_stream.permission = stream_chat_completion.permission  # type: ignore[attr-defined]
    ai.stream_chat_completion = traced_stream  # type: ignore[assignment]

    # Each function is wrapped where its caller looks it up (the module that imports it).
    plan = streaming.make_plan

    async def traced_plan(ctx: Any, principal: Any, request: Any, *args: Any, **kw: Any) -> Any:
        result = await plan(ctx, principal, request, *args, **kw)
        mark(request.messages[-1].content, "plan")
        return result

    streaming.make_plan = traced_plan  # type: ignore[assignment]

    def after(module: Any, name: str, stage: str, key_of: Any) -> None:
        original = getattr(module, name)

        async def traced(*args: Any, **kw: Any) -> Any:
            result = await original(*args, **kw)
            mark(key_of(*args), stage)
            return result

        setattr(module, name, traced)

    after(planning, "reserve", "quota", lambda *a: stream_key.get())
    after(planning, "credential", "credential", lambda *a: stream_key.get())
    after(streaming, "_settle", "settled", lambda *a: stream_key.get())
    after(streaming, "assign_ids", "ids", lambda *a: stream_key.get())
    after(prompts, "store_prompt", "stored", lambda *a: stream_key.get())

    chat_stream = openai_provider.ChatStream
    enter, chunks = chat_stream.__aenter__, chat_stream._chunks

    async def traced_enter(self: Any) -> Any:
        result = await enter(self)
        mark(self.args["messages"][-1]["content"], "opened")
        return result

    async def traced_chunks(self: Any) -> Any:
        key = self.args["messages"][-1]["content"]
        async for chunk in chunks(self):
            if chunk.delta:
                mark(key, "upstream_first")
                marks[key]["upstream_last"] = time.time()
            yield chunk

    chat_stream.__aenter__ = traced_enter  # type: ignore[method-assign]
    chat_stream._chunks = traced_chunks  # type: ignore[method-assign]


def report_trace(path: str, sent: dict[str, float], upstream: dict[str, float]) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    for row in rows:
        if row["key"] in upstream:
            row["upstream"] = upstream[row["key"]]
    print(f"  stages after the subscription was sent (ms; {len(rows)} streams traced):")
    print(f"    {'':36} {'median':>8} {'p95':>8} {'max':>8}")
    for stage, label in STAGES:
        times = [(row[stage] - sent[row["key"]]) * 1000 for row in rows if stage in row]
        if times:
            print(
                f"    {label:36} {statistics.median(times):8.1f} "
                f"{percentile(times, 95):8.1f} {max(times):8.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
