"""Tail latency of a realistic request mix with and without gc.freeze() after start-up.

    .venv/bin/python bench/bench_gc_freeze.py [--requests 6000]

Each mode runs in a fresh child process (gc.freeze is process-wide), on its own fresh
SQLite store, driving the whole gateway in-process: a mix of authenticated `me`,
member lists, an API key list, profile updates (writes), public server info, bad
requests and unauthenticated calls. The freeze happens where the app's lifespan does
it (GC_FREEZE): after start-up and the first requests, so the schema, modules and
caches leave the generations that every collection scans. Prints p50/p99/p99.9 per
mode and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import uuid

from _util import (
    bench_settings,
    call,
    graphql_body,
    open_bench_store,
    register_owner,
    summary_ms,
)

MIX = [
    # (weight, name, body, authenticated)
    (40, "me", "{ me { role user { email name } organization { name slug } } }", True),
    (15, "members", "{ members(first: 20) { edges { node { id role user { email } } } } }", True),
    (10, "apiKeys", "{ apiKeys(first: 20) { edges { node { id name role } } } }", True),
    (10, "serverInfo", "{ serverInfo { version environment serverTime } }", False),
    (10, "updateProfile", 'mutation { updateProfile(input: {name: "Bench"}) { name } }', True),
    (5, "validation error", "{ me { nope } }", True),
    (5, "unauthenticated", "{ me { role } }", False),
    (5, "parse error", "{ me { ", True),
]


async def child(freeze: bool, requests: int) -> dict:
    from gateway.app import create_app

    settings = bench_settings(log_level="WARNING")
    await open_bench_store(settings)
    app = create_app(settings, configure_logs=True)
    token = await register_owner(app, f"gc-{uuid.uuid4().hex[:8]}@example.com")
    auth = {"authorization": f"Bearer {token}"}
    schedule = []
    for weight, _name, query, authenticated in MIX:
        schedule += [(graphql_body(query), auth if authenticated else {})] * weight
    # Warm-up: every kind of request once (imports, caches), like a process that has
    # served its first requests; then what the lifespan does with GC_FREEZE.
    for body, headers in schedule:
        await call(app, "POST", "/graphql", body, headers)
    gc.collect()
    if freeze:
        gc.freeze()
    frozen = gc.get_freeze_count()
    collections_before = [s["collections"] for s in gc.get_stats()]
    samples = []
    perf = __import__("time").perf_counter
    for i in range(requests):
        body, headers = schedule[(i * 7) % len(schedule)]
        t0 = perf()
        response = await call(app, "POST", "/graphql", body, headers)
        samples.append(perf() - t0)
        assert response.status in (200, 400, 401), response.body
    collections = [
        s["collections"] - b for s, b in zip(gc.get_stats(), collections_before, strict=True)
    ]
    # What a full (generation 2) collection costs now: the pause a request that triggers
    # one waits for. Frozen objects are not scanned.
    pauses = []
    for _ in range(5):
        t0 = perf()
        gc.collect()
        pauses.append(perf() - t0)
    from models import store as db

    await db.close_store()
    return {
        "summary": summary_ms(samples),
        "frozen": frozen,
        "collections": collections,
        "full_collection_ms": min(pauses) * 1000,
    }


def run_child(mode: str, requests: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--requests", str(requests)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["freeze", "plain"])
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(child(args.child == "freeze", args.requests))
        print(json.dumps(result))
        return
    results: dict[str, list[dict]] = {"plain": [], "freeze": []}
    for _ in range(args.rounds):  # alternate, so background load hits both alike
        for mode in ("plain", "freeze"):
            results[mode].append(run_child(mode, args.requests))
    print(
        f"{args.requests} requests per run, {args.rounds} runs per mode, mix: "
        + ", ".join(f"{w}% {n}" for w, n, _, _ in MIX)
    )
    best: dict[str, dict[str, float]] = {}
    for mode, runs in results.items():
        for i, r in enumerate(runs):
            s = r["summary"]
            print(
                f"{mode:6s} run {i + 1}: p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms  "
                f"p99.9 {s['p99.9']:.3f} ms  mean {s['mean']:.3f} ms  "
                f"frozen objects {r['frozen']}  collections gen0/1/2 {r['collections']}  "
                f"full collection {r['full_collection_ms']:.2f} ms"
            )
        best[mode] = {k: min(r["summary"][k] for r in runs) for k in ("p50", "p99", "p99.9")}
    for k in ("p50", "p99", "p99.9"):
        print(f"{k:6s} freeze/plain (best runs): {best['freeze'][k] / best['plain'][k]:.2f}x")
    pause = {m: min(r["full_collection_ms"] for r in runs) for m, runs in results.items()}
    print(
        f"full collection pause: plain {pause['plain']:.2f} ms, freeze {pause['freeze']:.2f} ms "
        f"({pause['freeze'] / pause['plain']:.2f}x)"
    )


if __name__ == "__main__":
    main()
