"""A 16 MB upload through `uploadFile` (multipart spec, in-process ASGI, whole gateway:
edge, auth, CSRF rule, streaming parser, checks, local storage, row + event) vs a bare
Starlette handler streaming the same body to disk. Prints the ratio of throughputs and
the growth of traced memory (tracemalloc peak) during one upload.

    .venv/bin/python bench/bench_upload.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import bench_settings, open_bench_store, register_owner

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


def baseline_app(directory: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def handler(request: Request) -> JSONResponse:
        path = os.path.join(directory, os.urandom(8).hex())
        size = 0
        with open(path, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                size += len(chunk)
        return JSONResponse({"size": size})

    return Starlette(routes=[Route("/upload", handler, methods=["POST"])])


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
    bare = baseline_app(tempfile.mkdtemp(prefix="switchboard-bench-bare-"))

    assert await post(app, "/graphql", body, gateway_headers) == 200  # warm-up
    assert await post(bare, "/upload", data, raw_headers) == 200
    gateway_times, bare_times = [], []
    for _ in range(runs):  # alternate, so drift hits both alike
        started = time.perf_counter()
        assert await post(bare, "/upload", data, raw_headers) == 200
        bare_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert await post(app, "/graphql", body, gateway_headers) == 200
        gateway_times.append(time.perf_counter() - started)

    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    assert await post(app, "/graphql", body, gateway_headers) == 200
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    mb = len(data) / 1024 / 1024
    best_bare, best_gateway = min(bare_times), min(gateway_times)
    print(f"bare Starlette to disk: {mb / best_bare:7.1f} MB/s (best of {runs})")
    print(f"uploadFile (in-process ASGI): {mb / best_gateway:7.1f} MB/s (best of {runs})")
    print(f"ratio uploadFile / bare: {best_bare / best_gateway:.2f}x (target >= 0.5x)")
    print(
        f"memory growth during one upload (tracemalloc peak - start): "
        f"{(peak - base) / 1024 / 1024:.2f} MB (target < 4 MB; the body itself is "
        f"{len(body) / 1024 / 1024:.1f} MB, held by the bench's client)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
