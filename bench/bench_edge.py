"""The gateway's edge over HTTP: anonymous `{ __typename }` vs bare Strawberry `{ hello }`.

What every request pays before any field: the middleware (request id, client address,
body limits and timeout), authentication (none here: anonymous), the anonymous rate
limit, the access log (INFO, JSON, as deployed), metrics, the GraphQL view, the parse and
validation caches, the query limits, the cost check, error masking. No response cache
applies (anonymous callers are never cached). The baseline is a bare Strawberry app
(bench/bare_app.py) answering `{ hello }` with its parser and validation caches: the
least a Strawberry server does for a request.

`switchboard serve` (embedded defaults, SQLite) and the bare app each run under uvicorn
pinned to one core, `wrk` on the other (bench/_http.py); rounds alternate. Target >= 0.8x.

    .venv/bin/python bench/bench_edge.py [--seconds 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _http


def main(args: argparse.Namespace) -> None:
    port_g, port_b = _http.free_port(), _http.free_port()
    tmp = tempfile.mkdtemp(prefix="bench-edge-")
    env = {
        "DATABASE_URL": f"sqlite://{tmp}/edge.sqlite3",
        "STORAGE_URL": f"file://{tmp}/files",
        "RATE_LIMIT_ANONYMOUS": "1000000000/hour",
        "LOG_LEVEL": "INFO",
    }
    gateway = [str(Path(sys.executable).parent / "switchboard"), "serve", "--port", str(port_g)]
    sides = {
        "bare": (_http.uvicorn_argv("bare_app:app", port_b), port_b, None, "{ hello }"),
        "gateway": (gateway, port_g, env, "{ __typename }"),
    }
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (argv, port, side_env, query) in sides.items():
            with _http.server(argv, port, side_env) as url:
                answer = _http.post_json(f"{url}/graphql", {"query": query})
                if answer.get("errors") or not answer.get("data"):
                    raise SystemExit(f"{name}: {answer}")
                _http.wrk(f"{url}/graphql", {"query": query}, seconds=1)  # warm up
                figures[name].append(
                    _http.wrk(
                        f"{url}/graphql",
                        {"query": query},
                        seconds=args.seconds,
                        connections=args.connections,
                    )
                )
    print(f"over HTTP (server on cpu {_http.SERVER_CPU}, wrk on cpu {_http.LOAD_CPU}), "
          f"{args.rounds} alternating rounds of {args.seconds:.0f} s")  # fmt: skip
    for name, runs in figures.items():
        rps = [r["rps"] for r in runs]
        print(f"  {name:<8} {statistics.median(rps):8.0f} req/s (rounds: "
              + ", ".join(f"{x:.0f}" for x in rps)
              + f")  p50 {statistics.median(r['p50_ms'] for r in runs):.2f} ms")  # fmt: skip
    ratio = statistics.median(r["rps"] for r in figures["gateway"]) / statistics.median(
        r["rps"] for r in figures["bare"]
    )
    print(f"  ratio anonymous {{ __typename }} / bare {{ hello }}: {ratio:.2f}x  (target >= 0.80x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    main(parser.parse_args())
