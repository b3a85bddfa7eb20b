"""One `contact.created` event to N `activity` subscribers, and the weight of an idle
subscribed socket, measured from outside over real sockets.

Two processes, pinned as the issue measures them: the server on core 0 (`taskset -c 0`)
and this load generator on core 1. For each N (1,000 and 5,000 by default):

- the gateway (uvicorn, the whole app with its in-process relay) on a fresh store; N
  graphql-transport-ws sockets, 95 % in one organization (an owner's token with no filter
  and with `types: ["contact.*"]`, a SUPPORT and a READ_ONLY API key) and 5 % in another;
  the server's RSS (VmRSS) before and after the N idle subscribed sockets gives the
  memory per socket; then one `createContact` over HTTP per round (one warm-up round
  first): for each socket of the first organization, the time from the mutation's send
  until that socket has the event;
- the baseline, the fastest natural "deliver one message to N sockets": a bare Starlette
  WebSocket endpoint (same uvicorn, same client, same handshake messages answered) that
  sends one pre-encoded frame of the same size to every socket when poked over HTTP; its
  RSS per idle socket the same way.

The client side is a minimal asyncio WebSocket protocol (timestamp taken in
`data_received`), so the load generator's own cost per frame stays small next to the
server's. Prints p50/p99/max per round and the ratios gateway / baseline.

    .venv/bin/python bench/bench_fanout.py [--sockets 1000,5000] [--rounds 3] [--postgres]

`--postgres` (or BENCH_DATABASE_URL=postgres://…) runs on a scratch PostgreSQL database
(created on $BENCH_POSTGRES_URL's server and dropped); SQLite file store by default.
Targets and last figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._util import PG_ADMIN, create_scratch_database, percentile  # noqa: E402

PROTOCOL = "graphql-transport-ws"
ACTIVITY = (
    "subscription Activity($types: [String!]) "
    "{ activity(types: $types) { id type data occurredAt } }"
)
CREATE_CONTACT = """mutation($i: CreateContactInput!) {
  createContact(input: $i) { contact { id } } }"""
REGISTER = """mutation($i: RegisterOrganizationInput!) {
  registerOrganization(input: $i) { accessToken } }"""
CREATE_KEY = """mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }"""
MARKER = b"contact.created"
# The baseline's frame: the size of the gateway's `next` frame for a contact.created.
BARE_FRAME = (
    '{"id":"1","type":"next","payload":{"data":{"activity":{"id":"123","type":'
    '"contact.created","data":{"id":"Q29udGFjdDoxMjM=","name":"Bench contact 1"},'
    '"occurredAt":"2026-12-01T12:00:00.000000+00:00"}}}}'
)
OPEN_CONCURRENCY = 100
NOFILE = 20000

PRELUDE = (
    "import resource; "
    f"soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, (min({NOFILE}, hard), hard)); "
)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(NOFILE, hard), hard))


# The baseline server ---------------------------------------------------------------------


def bare_app() -> Any:
    """Accepts graphql-transport-ws sockets, answers `connection_init` and `ping`, and
    sends one pre-encoded frame to every socket on POST /poke."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    sockets: set[WebSocket] = set()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept(subprotocol=PROTOCOL)
        sockets.add(ws)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text") or ""
                if '"connection_init"' in text:
                    await ws.send_text('{"type":"connection_ack"}')
                elif '"ping"' in text:
                    await ws.send_text('{"type":"pong"}')
        finally:
            sockets.discard(ws)

    async def poke(request: Request) -> PlainTextResponse:
        for ws in list(sockets):
            await ws.send_text(BARE_FRAME)
        return PlainTextResponse("ok")

    async def up(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            WebSocketRoute("/graphql", endpoint),
            Route("/poke", poke, methods=["POST"]),
            Route("/", up),
        ]
    )


# A minimal WebSocket client --------------------------------------------------------------


class Round:
    """One event's delivery: which sockets must get it, and when each did."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times: list[float] = []
        self.done = asyncio.get_running_loop().create_future()

    def hit(self, at: float) -> None:
        self.times.append(at)
        if len(self.times) >= self.expected and not self.done.done():
            self.done.set_result(None)


class Client(asyncio.Protocol):
    """A graphql-transport-ws client socket that only needs to send small text frames and
    notice one marker in the frames it receives."""

    def __init__(self, host: str, port: int, counts: bool) -> None:
        self.request = (
            f"GET /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
        ).encode()
        self.counts = counts  # whether this socket must receive the measured events
        self.buffer = bytearray()
        self.upgraded = False
        loop = asyncio.get_running_loop()
        self.opened = loop.create_future()
        self.acked = loop.create_future()
        self.pong: asyncio.Future[None] | None = None
        self.round: Round | None = None
        self.others: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.opened, self.acked, self.pong):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("socket closed"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.opened.set_exception(ConnectionError(head[:200].decode("latin-1")))
                return
            self.upgraded = True
            self.opened.set_result(None)
        buf = self.buffer
        while len(buf) >= 2:
            length = buf[1] & 0x7F
            start = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, start = struct.unpack_from(">H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, start = struct.unpack_from(">Q", buf, 2)[0], 10
            if len(buf) < start + length:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[start : start + length])
            del buf[: start + length]
            if opcode == 1:
                self.text(payload, now)
            elif opcode == 9:
                self.frame(0xA, payload)
            elif opcode == 8:
                code = struct.unpack_from(">H", payload)[0] if len(payload) >= 2 else 1005
                self.others.append(b"close %d %s" % (code, payload[2:]))

    def text(self, payload: bytes, now: float) -> None:
        if MARKER in payload:
            if self.round is not None and self.counts:
                self.round.hit(now)
                self.round = None
            return
        if payload == b'{"type":"connection_ack"}':
            if not self.acked.done():
                self.acked.set_result(None)
        elif payload == b'{"type":"pong"}':
            if self.pong is not None and not self.pong.done():
                self.pong.set_result(None)
        else:
            self.others.append(payload[:300])

    def frame(self, opcode: int, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        keyed = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(data, "big") ^ int.from_bytes(keyed, "big")).to_bytes(n, "big")
        self.transport.write(head + mask + masked)

    def send(self, message: dict[str, Any]) -> None:
        self.frame(0x1, json.dumps(message, separators=(",", ":")).encode())

    async def ping(self) -> None:
        self.pong = asyncio.get_running_loop().create_future()
        self.send({"type": "ping"})
        await asyncio.wait_for(self.pong, 120)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_clients(
    port: int, plan: list[tuple[dict[str, Any], dict[str, Any], bool]]
) -> list[Client]:
    """One socket per (connection_init payload, subscribe variables, counts) in `plan`."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    clients: list[Client] = []

    async def one(init: dict[str, Any], variables: dict[str, Any], counts: bool) -> None:
        async with gate:
            _, client = await loop.create_connection(
                lambda: Client("127.0.0.1", port, counts), "127.0.0.1", port
            )
            clients.append(client)
            await asyncio.wait_for(client.opened, 120)
            client.send({"type": "connection_init", "payload": init})
            await asyncio.wait_for(client.acked, 120)
            client.send(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": ACTIVITY, "variables": variables},
                }
            )

    await asyncio.gather(*(one(*p) for p in plan))
    # Messages on a socket are handled in order: a pong means its subscribe was handled.
    for i in range(0, len(clients), 500):
        await asyncio.gather(*(c.ping() for c in clients[i : i + 500]))
    return clients


# Processes ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-c", PRELUDE + code],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settled(pid: int) -> None:
    """Until the server spends under 2 % of a core over half a second (its sockets idle)."""
    for _ in range(120):
        before = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if cpu_seconds(pid) - before < 0.01:
            return


async def wait_up(session: Any, url: str) -> None:
    for _ in range(600):
        try:
            async with session.get(url) as answer:
                await answer.read()
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


async def gql(
    session: Any, url: str, query: str, variables: dict[str, Any], token: str = ""
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(
        url + "/graphql", json={"query": query, "variables": variables}, headers=headers
    ) as answer:
        body = await answer.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


# Runs --------------------------------------------------------------------------------------


async def scratch_database(postgres: bool) -> tuple[str, Any]:
    explicit = os.environ.get("BENCH_DATABASE_URL", "")
    if not postgres and not explicit.startswith("postgres"):
        return await create_scratch_database("sqlite")
    return await create_scratch_database("postgres", explicit or PG_ADMIN)


async def create_schema(database_url: str) -> None:
    from tortoise import Tortoise

    from kit.settings import load_settings
    from models import store as db

    await db.open_store(load_settings(database_url=database_url, switchboard_env="test"))
    await Tortoise.generate_schemas()
    await db.close_store()


def plan_for(
    n: int, principals: dict[str, str]
) -> list[tuple[dict[str, Any], dict[str, Any], bool]]:
    """Most sockets in one organization (as the issue's scenario), a few in another."""
    plan = []
    for i in range(n):
        slot = i % 20
        if slot == 19:
            token, variables, counts = principals["b_owner"], {"types": None}, False
        elif slot == 18:
            token, variables, counts = principals["a_readonly"], {"types": None}, True
        elif slot == 17:
            token, variables, counts = principals["a_support"], {"types": None}, True
        elif slot == 16:
            token, variables, counts = principals["a_owner"], {"types": ["contact.*"]}, True
        else:
            token, variables, counts = principals["a_owner"], {"types": None}, True
        plan.append(({"Authorization": f"Bearer {token}"}, variables, counts))
    return plan


def figures(times: list[float], t0: float) -> dict[str, float]:
    ms = [(t - t0) * 1000 for t in times]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms)}


async def deliver(clients: list[Client], trigger: Any, label: str) -> dict[str, float]:
    expected = [c for c in clients if c.counts]
    current = Round(len(expected))
    for c in expected:
        c.round = current
    t0 = time.perf_counter()
    await trigger()
    try:
        await asyncio.wait_for(current.done, 60)
    except TimeoutError:
        sample = next((c.others[-1] for c in expected if c.round is not None and c.others), b"")
        raise RuntimeError(
            f"{label}: {len(current.times)} of {len(expected)} sockets got the event; "
            f"e.g. {sample!r}"
        ) from None
    return figures(current.times, t0)


async def measure(
    pid: int,
    port: int,
    plan: list[Any],
    clients: list[Client],
    trigger: Callable[[int], Awaitable[None]],
    rounds: int,
    label: str,
) -> dict[str, Any]:
    """Open the planned sockets (into `clients`, which the caller closes), then time
    `rounds` deliveries after a warm-up one; the server's RSS per idle socket."""
    n = len(plan)
    await settled(pid)
    before = rss_kib(pid)
    clients.extend(await open_clients(port, plan))
    await settled(pid)
    after = rss_kib(pid)
    results = []
    for r in range(rounds + 1):
        got = await deliver(clients, functools.partial(trigger, r), label)
        if r:
            results.append(got)
        await settled(pid)
    return {"rounds": results, "kib_per_socket": (after - before) / n, "rss": (before, after)}


async def run_gateway(n: int, rounds: int, postgres: bool, session: Any) -> dict[str, Any]:
    database_url, drop = await scratch_database(postgres)
    await create_schema(database_url)
    port = free_port()
    env = {
        "SWITCHBOARD_ENV": "test",
        "DATABASE_URL": database_url,
        # Real budgets on the path, large enough that the bench never hits them.
        "RATE_LIMIT_AUTHENTICATED": "100000000/hour",
        "RATE_LIMIT_ANONYMOUS": "100000000/hour",
        "LOG_LEVEL": "ERROR",
        # The sign-up mails go to the gateway's own mail sandbox.
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    server = start_server(
        "import uvicorn; from gateway.app import create_app; "
        f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning', "
        "ws_per_message_deflate=False, proxy_headers=False, backlog=4096)",
        env,
    )
    url = f"http://127.0.0.1:{port}"
    clients: list[Client] = []
    try:
        await wait_up(session, url + "/health/live")
        principals: dict[str, str] = {}
        for org in ("a", "b"):
            data = await gql(
                session,
                url,
                REGISTER,
                {
                    "i": {
                        "organizationName": f"Bench {org}",
                        "email": f"bench-{org}-{uuid.uuid4().hex[:6]}@example.com",
                        "password": "correct horse battery staple",
                        "name": "Bench",
                    }
                },
            )
            principals[f"{org}_owner"] = data["registerOrganization"]["accessToken"]
        for role in ("SUPPORT", "READ_ONLY"):
            data = await gql(
                session, url, CREATE_KEY, {"i": {"name": role, "role": role}}, principals["a_owner"]
            )
            principals[f"a_{role.lower().replace('_', '')}"] = data["createApiKey"]["secret"]
        owner = principals["a_owner"]

        async def create(r: int) -> None:
            await gql(session, url, CREATE_CONTACT, {"i": {"name": f"Bench {r}"}}, owner)

        return await measure(
            server.pid, port, plan_for(n, principals), clients, create, rounds, f"gateway N={n}"
        )
    finally:
        for c in clients:
            c.close()
        stop(server)
        await drop()


async def run_bare(n: int, rounds: int, session: Any) -> dict[str, Any]:
    port = free_port()
    server = start_server(
        "import uvicorn; from bench.bench_fanout import bare_app; "
        f"uvicorn.run(bare_app(), host='127.0.0.1', port={port}, log_level='warning', "
        "ws_per_message_deflate=False, lifespan='off', backlog=4096)",
        {},
    )
    url = f"http://127.0.0.1:{port}"
    clients: list[Client] = []
    try:
        await wait_up(session, url + "/")
        plan = [({"Authorization": "Bearer x"}, {"types": None}, True) for _ in range(n)]

        async def poke(r: int) -> None:
            async with session.post(url + "/poke") as answer:
                await answer.read()

        return await measure(server.pid, port, plan, clients, poke, rounds, f"bare N={n}")
    finally:
        for c in clients:
            c.close()
        stop(server)


def line(name: str, result: dict[str, Any]) -> str:
    rounds = result["rounds"]
    each = "; ".join(f"p50 {f['p50']:.0f} p99 {f['p99']:.0f} max {f['max']:.0f}" for f in rounds)
    return (
        f"  {name:8} {each} ms | RSS {result['rss'][0] / 1024:.0f} -> "
        f"{result['rss'][1] / 1024:.0f} MiB, {result['kib_per_socket']:.1f} KiB/socket"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", default="1000,5000", help="comma-separated N")
    parser.add_argument("--rounds", type=int, default=3, help="measured events per N")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    os.sched_setaffinity(0, {1})
    import aiohttp

    store = (
        "PostgreSQL"
        if args.postgres or os.environ.get("BENCH_DATABASE_URL", "").startswith("postgres")
        else "SQLite"
    )
    async with aiohttp.ClientSession() as session:
        for n in (int(x) for x in args.sockets.split(",")):
            gateway = await run_gateway(n, args.rounds, args.postgres, session)
            bare = await run_bare(n, args.rounds, session)
            p99_gw = statistics.median(f["p99"] for f in gateway["rounds"])
            p99_bare = statistics.median(f["p99"] for f in bare["rounds"])
            print(f"N={n} sockets ({store}), one event, {args.rounds} rounds after a warm-up:")
            print(line("gateway", gateway))
            print(line("bare", bare))
            print(
                f"  p99 (median of rounds) {p99_gw:.0f} ms vs {p99_bare:.0f} ms: "
                f"{p99_gw / p99_bare:.1f}x the bare broadcast; target <= 250 ms at 5,000"
            )
            print(
                f"  memory per idle subscribed socket {gateway['kib_per_socket']:.1f} KiB vs "
                f"{bare['kib_per_socket']:.1f} KiB: "
                f"{gateway['kib_per_socket'] / max(bare['kib_per_socket'], 0.1):.1f}x; "
                "target <= 40 KiB",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
