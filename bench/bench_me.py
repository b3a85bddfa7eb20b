"""Authenticated `me` through the whole gateway vs a bare cached Strawberry `{ hello }`.

    .venv/bin/python bench/bench_me.py [--requests 3000] [--rounds 5] [--profile]

Both apps live in this process and are driven the same way (in-process ASGI calls, one
request at a time, rounds interleaved so background load hits both alike). The gateway
request carries the whole edge: request id, JWT verification, the per-principal rate
limit, permission checks, query limits, error masking, metrics, the JSON access log
(INFO, written to /dev/null), and the store lookups of `me` (SQLite, the embedded
default; `--database-url postgres://...` for PostgreSQL).

Three figures: the baseline, `{ me { role } }` (the whole edge, no store lookup: the
role comes from the token) and the full `me` (two store lookups). Prints requests per
second and the ratios to the baseline (target for the full `me`: >= 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import uuid

from _util import (
    bench_settings,
    call,
    graphql_body,
    open_bench_store,
    register_owner,
    summary_ms,
    timed,
)

ME = "{ me { role user { email } organization { name } } }"
ROLE = "{ me { role } }"


def logs_to_devnull() -> None:
    """Keep the gateway's real log handler (JSON, scrubbing) but write to /dev/null."""
    import logging

    devnull = open(os.devnull, "w")  # lives as long as the process
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_switchboard", False) and isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)


def baseline_app():
    import strawberry
    from starlette.applications import Starlette
    from starlette.routing import Route
    from strawberry.asgi import GraphQL
    from strawberry.extensions import ParserCache, ValidationCache

    @strawberry.type
    class Query:
        @strawberry.field
        def hello(self) -> str:
            return "world"

    schema = strawberry.Schema(
        query=Query,
        extensions=[lambda: ParserCache(maxsize=512), lambda: ValidationCache(maxsize=512)],
    )
    view = GraphQL(schema, graphql_ide=None)
    return Starlette(routes=[Route("/graphql", view, methods=["GET", "POST"])])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="pyinstrument the gateway side")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    args = parser.parse_args()

    from gateway.app import create_app

    overrides = {"log_level": "INFO"}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = bench_settings(**overrides)
    await open_bench_store(settings)
    gateway = create_app(settings, configure_logs=True)
    logs_to_devnull()
    token = await register_owner(gateway, f"bench-{uuid.uuid4().hex[:8]}@example.com")
    me_body = graphql_body(ME)
    role_body = graphql_body(ROLE)
    auth = {"authorization": f"Bearer {token}"}
    hello_body = graphql_body("{ hello }")
    baseline = baseline_app()

    async def gateway_me() -> None:
        response = await call(gateway, "POST", "/graphql", me_body, auth)
        assert response.status == 200 and b'"errors"' not in response.body, response.body

    async def gateway_role() -> None:
        response = await call(gateway, "POST", "/graphql", role_body, auth)
        assert response.body == b'{"data":{"me":{"role":"OWNER"}}}', response.body

    async def baseline_hello() -> None:
        response = await call(baseline, "POST", "/graphql", hello_body)
        assert response.status == 200 and response.body == b'{"data":{"hello":"world"}}'

    first = await call(gateway, "POST", "/graphql", me_body, auth)
    print("gateway answer:", first.body.decode())
    print("rate-limit headers:", {k: v for k, v in first.headers.items() if "ratelimit" in k})

    await timed(gateway_me, 300)  # warm caches, DataLoader paths, SQLite page cache
    await timed(gateway_role, 300)
    await timed(baseline_hello, 300)

    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="enabled")
        profiler.start()
        await timed(gateway_me, args.requests)
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        return

    runs: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("baseline", "edge", "me")
    }
    fns = {"baseline": baseline_hello, "edge": gateway_role, "me": gateway_me}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            samples = await timed(fn, args.requests)
            runs[name][0].append(len(samples) / sum(samples))
            runs[name][1].extend(samples)
    rate = {name: statistics.median(r[0]) for name, r in runs.items()}
    labels = {
        "baseline": "baseline { hello }, bare strawberry    ",
        "edge": "gateway { me { role } } (edge, no store)",
        "me": "gateway me + user + organization (store)",
    }
    print(
        f"store: {settings.database_url.split('://')[0]}; {args.requests} requests x "
        f"{args.rounds} rounds each, interleaved; req/s = median of rounds"
    )
    for name, label in labels.items():
        print(f"{label}: {rate[name]:7.0f} req/s  {fmt(summary_ms(runs[name][1]))}")
    print(f"ratio edge/baseline: {rate['edge'] / rate['baseline']:.2f}x")
    print(f"ratio me/baseline:   {rate['me'] / rate['baseline']:.2f}x (target >= 0.80x)")

    from gateway import db

    await db.close_store()


def fmt(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms  mean {s['mean']:.3f} ms"


if __name__ == "__main__":
    asyncio.run(main())
