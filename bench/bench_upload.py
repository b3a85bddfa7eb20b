"""A 16 MB upload through `uploadFile` (multipart spec, whole gateway: edge, auth, CSRF
rule, streaming parser, SHA-256, sniffing, checks, local storage, row + event) vs a bare
Starlette handler streaming the same body to disk — the issue's baseline — and vs the
same handler also hashing the body with SHA-256 (the work a file row needs, which the
bare handler skips). In-process (ASGI) and over HTTP (uvicorn server processes, an
aiohttp client). Prints the ratios of throughputs and the growth of traced memory
(tracemalloc peak) during one in-process upload.

    .venv/bin/python bench/bench_upload.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import (
    REGISTER,
    bench_settings,
    graphql_body,
    open_bench_store,
    register_owner,
    temp_sqlite_url,
)

REGISTER_VARIABLES = {
    "i": {
        "organizationName": "Bench Inc",
        "email": "bench-http@example.com",
        "password": "correct horse battery staple",
        "name": "Bench",
    }
}

SIZE = 16 * 1024 * 1024 - 4096  # just under the 16 MB limit, with room for the form
CHUNK = 64 * 1024
BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"
UPLOAD = """mutation($input: UploadFileInput!) { uploadFile(input: $input) { file { id size } } }"""


def multipart(data: bytes) -> bytes:
    operations = {"query": UPLOAD, "variables": {"input": {"file": None, "purpose": "DOCUMENT"}}}
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        f"{json.dumps(operations)}\r\n",
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        f"{json.dumps({'0': ['variables.input.file']})}\r\n",
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="0"; filename="big.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n",
    ]
    return "".join(parts).encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


async def post(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One request, the body sent in CHUNK-sized messages as a server would."""
    sent = 0
    status = [0]

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent >= len(body):
            await asyncio.sleep(3600)
        chunk = body[sent : sent + CHUNK]
        sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < len(body)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-length", str(len(body)).encode()), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("bench", 80),
    }
    await app(scope, receive, send)
    return status[0]


def baseline_app(directory: str | None = None) -> Any:
    """POST /upload streams the body to disk; POST /upload-sha256 also hashes it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    folder = directory or tempfile.mkdtemp(prefix="switchboard-bench-bare-")

    async def handler(request: Request) -> JSONResponse:
        path = os.path.join(folder, os.urandom(8).hex())
        size = 0
        with open(path, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                size += len(chunk)
        return JSONResponse({"size": size})

    async def hashing(request: Request) -> JSONResponse:
        path = os.path.join(folder, os.urandom(8).hex())
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                digest.update(chunk)
        return JSONResponse({"sha256": digest.hexdigest()})

    return Starlette(
        routes=[
            Route("/upload", handler, methods=["POST"]),
            Route("/upload-sha256", hashing, methods=["POST"]),
        ]
    )


def report(where: str, mb: float, best: dict[str, float], runs: int) -> None:
    print(f"{where}:")
    print(f"  bare Starlette to disk:           {mb / best['bare']:7.1f} MB/s (best of {runs})")
    print(f"  bare Starlette to disk + SHA-256: {mb / best['hash']:7.1f} MB/s")
    print(f"  uploadFile:                       {mb / best['gateway']:7.1f} MB/s")
    ratio = best["bare"] / best["gateway"]
    print(f"  ratio uploadFile / bare:           {ratio:.2f}x (target >= 0.5x)")
    print(f"  ratio uploadFile / bare + SHA-256: {best['hash'] / best['gateway']:.2f}x")


async def over_http(runs: int, data: bytes, body: bytes) -> dict[str, float]:
    """The same three uploads against uvicorn server processes, one at a time."""
    import aiohttp
    from tortoise import Tortoise

    from bench.bench_ai_stream import free_port, start, wait_up
    from models import store as db

    database_url = temp_sqlite_url()
    objects = tempfile.mkdtemp(prefix="switchboard-bench-objects-")
    await db.open_store(bench_settings(database_url=database_url))
    await Tortoise.generate_schemas()
    await db.close_store()
    gateway_port, bare_port = free_port(), free_port()
    env = {
        "SWITCHBOARD_ENV": "test",
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{objects}",
        "RATE_LIMIT_AUTHENTICATED": "10000000/hour",
        "RATE_LIMIT_ANONYMOUS": "10000000/hour",
        "LOGIN_ATTEMPTS_PER_ACCOUNT": "100000/minute",
        "LOGIN_ATTEMPTS_PER_ADDRESS": "100000/minute",
        "LOG_LEVEL": "WARNING",
        "RUN_WORKER": "false",
        "GC_FREEZE": "false",
    }
    procs = [
        start(
            "import uvicorn; from gateway.app import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={gateway_port}, "
            "log_level='warning')",
            env,
        ),
        start(
            "import uvicorn; from bench.bench_upload import baseline_app; "
            f"uvicorn.run(baseline_app(), host='127.0.0.1', port={bare_port}, "
            "log_level='warning', lifespan='off')",
            {},
        ),
    ]
    gateway, bare = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{bare_port}"
    try:
        await wait_up(f"{gateway}/health/live")
        await wait_up(f"{bare}/")
        async with aiohttp.ClientSession() as session:
            register = json.loads(graphql_body(REGISTER, REGISTER_VARIABLES))
            async with session.post(f"{gateway}/graphql", json=register) as answer:
                token = (await answer.json())["data"]["registerOrganization"]["accessToken"]
            headers = {
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Authorization": f"Bearer {token}",
                "Apollo-Require-Preflight": "true",
            }
            raw = {"Content-Type": "application/octet-stream"}

            async def once(url: str, payload: bytes, send_headers: dict[str, str]) -> float:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=send_headers) as answer:
                    text = await answer.text()
                    assert answer.status == 200 and '"errors"' not in text, text[:300]
                return time.perf_counter() - started

            times: dict[str, list[float]] = {"bare": [], "hash": [], "gateway": []}
            for _ in range(runs + 1):  # the first round warms up
                times["bare"].append(await once(f"{bare}/upload", data, raw))
                times["hash"].append(await once(f"{bare}/upload-sha256", data, raw))
                times["gateway"].append(await once(f"{gateway}/graphql", body, headers))
        return {name: min(values[1:]) for name, values in times.items()}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


async def main(runs: int) -> None:
    from gateway.app import create_app

    objects = tempfile.mkdtemp(prefix="switchboard-bench-objects-")
    settings = bench_settings(storage_url=f"file://{objects}")
    await open_bench_store(settings)
    app = create_app(settings, configure_logs=False)
    token = await register_owner(app)
    data = b"%PDF-1.7\n" + os.urandom(SIZE - 9)
    body = multipart(data)
    gateway_headers = [
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
        (b"authorization", f"Bearer {token}".encode()),
        (b"apollo-require-preflight", b"true"),
    ]
    raw_headers = [(b"content-type", b"application/octet-stream")]
    bare = baseline_app()

    assert await post(app, "/graphql", body, gateway_headers) == 200  # warm-up
    assert await post(bare, "/upload", data, raw_headers) == 200
    times: dict[str, list[float]] = {"bare": [], "hash": [], "gateway": []}
    for _ in range(runs):  # alternate, so drift hits all alike
        for name, target, path, payload, headers in (
            ("bare", bare, "/upload", data, raw_headers),
            ("hash", bare, "/upload-sha256", data, raw_headers),
            ("gateway", app, "/graphql", body, gateway_headers),
        ):
            started = time.perf_counter()
            assert await post(target, path, payload, headers) == 200
            times[name].append(time.perf_counter() - started)

    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    assert await post(app, "/graphql", body, gateway_headers) == 200
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    mb = len(data) / 1024 / 1024
    report("in-process (ASGI)", mb, {name: min(values) for name, values in times.items()}, runs)
    print(
        f"memory growth during one upload (tracemalloc peak - start): "
        f"{(peak - base) / 1024 / 1024:.2f} MB (target < 4 MB; the body itself is "
        f"{len(body) / 1024 / 1024:.1f} MB, held by the bench's client)"
    )
    from models import store as db

    await db.close_store()
    report(
        "over HTTP (uvicorn processes, aiohttp client)", mb, await over_http(runs, data, body), runs
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
