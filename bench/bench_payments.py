"""`createPaymentIntent` through the whole gateway vs the `stripe` library calling the same
Stripe sandbox directly, in one run.

The Stripe sandbox runs in its own uvicorn process (its CPU is not ours). Both sides make
the same vendor call, one at a time:

- baseline: `stripe.StripeClient` with the library's own aiohttp client,
  `payment_intents.create_async({amount, currency, metadata}, idempotency_key=…)`;
- gateway: the `createPaymentIntent` mutation (in-process ASGI: edge, auth, limits,
  validation, the Payment row and its `payment.created` event committed before the call,
  the credential chain, the provider layer under the SDK, the answer applied in a second
  transaction), on a SQLite file (or `--database-url`).

Rounds alternate (baseline, gateway, gateway, baseline, …); the medians of each side over
all rounds and their difference are printed. Target: the gateway adds ≤ 3 ms at the median.

    .venv/bin/python bench/bench_payments.py [--requests 300] [--rounds 4]
        [--database-url postgres://…]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._util import (  # noqa: E402
    bench_settings,
    call,
    graphql_body,
    open_bench_store,
    register_owner,
    timed,
)

KEY = "sk_test_bench_payments"
CREATE = """mutation($i: CreatePaymentIntentInput!) {
  createPaymentIntent(input: $i) { payment { id status } } }"""


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


def logs_to_devnull() -> None:
    import logging

    devnull = open(os.devnull, "w")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "providers.sandbox.stripe:create_app", "--factory",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        await wait_up(url)
        import stripe

        from gateway.app import create_app

        overrides: dict[str, object] = {
            "stripe_secret_key": KEY,
            "stripe_base_url": url,
            "sandbox_webhooks": False,
        }
        if args.database_url:
            overrides["database_url"] = args.database_url
        settings = bench_settings(**overrides)
        await open_bench_store(settings)
        app = create_app(settings, configure_logs=True)
        logs_to_devnull()
        token = await register_owner(app, f"bench-{uuid.uuid4().hex[:8]}@example.com")
        auth = {"authorization": f"Bearer {token}"}

        http = stripe.AIOHTTPClient()
        library = stripe.StripeClient(
            KEY, base_addresses={"api": url}, http_client=http, max_network_retries=0
        )

        async def direct() -> None:
            await library.v1.payment_intents.create_async(
                {"amount": 1234, "currency": "eur", "metadata": {"order": "bench"}},
                {"idempotency_key": uuid.uuid4().hex},
            )

        async def gateway() -> None:
            body = graphql_body(
                CREATE,
                {"i": {"amount": "12.34", "currency": "EUR", "idempotencyKey": uuid.uuid4().hex}},
            )
            response = await call(app, "POST", "/graphql", body, auth)
            data = response.json()
            if "errors" in data or data["data"]["createPaymentIntent"]["payment"]["status"] != (
                "REQUIRES_PAYMENT_METHOD"
            ):
                raise RuntimeError(f"gateway answered {data}")

        for fn in (direct, gateway):  # warm up both paths (pools, caches, imports)
            await timed(fn, 30)
        samples: dict[str, list[float]] = {"direct": [], "gateway": []}
        for r in range(args.rounds):
            order = (("direct", direct), ("gateway", gateway))
            for name, fn in order if r % 2 == 0 else order[::-1]:
                samples[name] += await timed(fn, args.requests)
        base = statistics.median(samples["direct"]) * 1000
        ours = statistics.median(samples["gateway"]) * 1000
        print(f"stripe library direct  median {base:.2f} ms  (n={len(samples['direct'])})")
        print(f"createPaymentIntent    median {ours:.2f} ms  (n={len(samples['gateway'])})")
        print(
            f"gateway adds {ours - base:.2f} ms at the median ({ours / base:.2f}x); target <= 3 ms"
        )
        await http.close_async()
    finally:
        sandbox.terminate()
        sandbox.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
