"""Authenticated `me` through the whole gateway vs a bare cached Strawberry `{ hello }`.

    .venv/bin/python bench/bench_me.py [--requests 3000] [--rounds 5] [--profile NAME]
        [--database-url postgres://...]

All apps live in this process and are driven the same way (in-process ASGI calls, one
request at a time, rounds interleaved so background load hits all alike). Every gateway
request carries the whole edge: request id, JWT verification (the per-process verified
token cache), the per-principal rate limit with its headers, the JSON access log (INFO,
written to /dev/null) and the HTTP metrics. Store: a fresh SQLite file by default.

Figures (requests per second, ratios to the baseline; target for `me`: >= 0.8):
- baseline: bare Strawberry `{ hello }` with its parser and validation caches;
- edge: `{ me { role } }` with the response cache off (RESPONSE_CACHE_ENTRIES=0): the
  edge plus Strawberry's whole pipeline (parse/validate caches, permission check, query
  limits, error masking, GraphQL metrics), no store lookup (the role is in the token);
- me, cached: `me { role user { email } organization { name } }` as deployed (response
  cache on, the default). A hit still does everything the middleware does (request id,
  authentication, rate limit, access log, HTTP metrics), reads the body, looks the answer
  up by (principal key, tenant, role, body), sends it, and counts a GraphQL operation and
  a cache hit; it skips context building, parsing, validation, permission checks and
  execution;
- me, response cache off: the same query executed every time; the user and organization
  profiles come from the viewer cache (VIEWER_CACHE_SECONDS=5);
- me, nothing cached: VIEWER_CACHE_SECONDS=0, so both profiles are read from the store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import uuid
from collections.abc import Awaitable, Callable

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
    parser.add_argument(
        "--profile", choices=sorted(LABELS), help="pyinstrument one series instead of timing"
    )
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    args = parser.parse_args()

    from gateway.app import create_app

    overrides: dict[str, object] = {"log_level": "INFO"}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = bench_settings(**overrides)
    await open_bench_store(settings)
    gateway = create_app(settings, configure_logs=True)
    uncached = create_app(
        settings.model_copy(update={"response_cache_entries": 0}), configure_logs=False
    )
    no_caches = create_app(
        settings.model_copy(update={"viewer_cache_seconds": 0.0}), configure_logs=False
    )
    logs_to_devnull()
    token = await register_owner(gateway, f"bench-{uuid.uuid4().hex[:8]}@example.com")
    me_body = graphql_body(ME)
    role_body = graphql_body(ROLE)
    auth = {"authorization": f"Bearer {token}"}
    hello_body = graphql_body("{ hello }")
    baseline = baseline_app()

    def gateway_me(app: object) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            response = await call(app, "POST", "/graphql", me_body, auth)
            assert response.status == 200 and b'"errors"' not in response.body, response.body

        return run

    async def gateway_role() -> None:
        response = await call(uncached, "POST", "/graphql", role_body, auth)
        assert response.body.startswith(b'{"data":{"me":{"role":"OWNER"}}'), response.body

    async def baseline_hello() -> None:
        response = await call(baseline, "POST", "/graphql", hello_body)
        assert response.status == 200 and response.body == b'{"data":{"hello":"world"}}'

    fns = {
        "baseline": baseline_hello,
        "edge": gateway_role,
        "me": gateway_me(gateway),
        "me_uncached": gateway_me(uncached),
        "me_no_caches": gateway_me(no_caches),
    }
    first = await call(gateway, "POST", "/graphql", me_body, auth)
    print("gateway answer:", first.body.decode())
    print("rate-limit headers:", {k: v for k, v in first.headers.items() if "ratelimit" in k})

    for fn in fns.values():
        await timed(fn, 300)  # warm caches, DataLoader paths, SQLite page cache

    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="enabled")
        profiler.start()
        await timed(fns[args.profile], args.requests)
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        return

    runs: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            samples = await timed(fn, args.requests)
            runs[name][0].append(len(samples) / sum(samples))
            runs[name][1].extend(samples)
    rate = {name: statistics.median(r[0]) for name, r in runs.items()}
    print(
        f"store: {settings.database_url.split('://')[0]}; {args.requests} requests x "
        f"{args.rounds} rounds each, interleaved; req/s = median of rounds"
    )
    for name, label in LABELS.items():
        print(f"{label}: {rate[name]:7.0f} req/s  {fmt(summary_ms(runs[name][1]))}")
    for name in ("edge", "me", "me_uncached", "me_no_caches"):
        target = " (target >= 0.80x)" if name == "me" else ""
        print(f"ratio {name}/baseline: {rate[name] / rate['baseline']:.2f}x{target}")

    from models import store as db

    await db.close_store()


LABELS = {
    "baseline": "baseline { hello }, bare strawberry     ",
    "edge": "edge { me { role } }, response cache off",
    "me": "me (user, org), response cache on      ",
    "me_uncached": "me (user, org), response cache off     ",
    "me_no_caches": "me (user, org), VIEWER_CACHE_SECONDS=0 ",
}


def fmt(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms  mean {s['mean']:.3f} ms"


if __name__ == "__main__":
    asyncio.run(main())
