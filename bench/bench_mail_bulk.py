"""A bulk send of 1,000 recipients delivered over SMTP: the gateway (`sendBulkEmail`
through the whole ASGI app — validation, suppression check, rendering each recipient's
message from its template, the rows, jobs and events in one transaction — then the
`mail.send_batch` jobs of the in-process worker: one SMTP connection per chunk of 100,
outcomes recorded in groups) against a bare aiosmtplib loop sending the same 1,000
already-built messages on one connection.

    .venv/bin/python bench/bench_mail_bulk.py [--recipients 1000] [--rounds 3]

Both deliver to the same aiosmtpd server (its own thread), in alternating rounds; a round
ends when the server has taken every message (and, for the gateway, every row says
SENT). SQLite file store by default, `--postgres` for PostgreSQL at $BENCH_POSTGRES_URL.
Prints messages/second of each (medians) and the ratio gateway/baseline (target: >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import uuid
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from _util import bench_settings, call, graphql_body, open_bench_store, register_owner
from aiosmtpd.controller import Controller

BULK = """mutation($i: SendBulkEmailInput!) {
  sendBulkEmail(input: $i) { batch { id queued } } }"""


class Sink:
    """aiosmtpd handler counting messages per round (it runs in the server's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.target = 0
        self.done = threading.Event()

    def expect(self, n: int) -> None:
        with self.lock:
            self.count, self.target = 0, n
            self.done.clear()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if any(r.endswith("@bulk.test") for r in envelope.rcpt_tos):
            with self.lock:
                self.count += 1
                if self.count >= self.target:
                    self.done.set()
        return "250 OK"


async def wait_for(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.002)


def message(i: int) -> EmailMessage:
    """What the baseline sends: the same template rendered for recipient `i`."""
    from resolvers.mail import render

    body = render(
        "admin_broadcast",
        {"headline": "News", "message": "Hello all", "name": f"R{i}"},
        organization="Bench Inc",
        unsubscribe_url=f"https://bench.test/mail/unsubscribe/{uuid.uuid4().hex}",
    )
    built = EmailMessage()
    built["From"] = "Bench Inc <mail@bench.test>"
    built["To"] = f"R{i} <r{i}@bulk.test>"
    built["Subject"] = body.subject
    built["Message-ID"] = f"<{uuid.uuid4().hex}@bench.test>"
    built.set_content(body.text)
    built.add_alternative(body.html, subtype="html")
    return built


async def baseline_round(sink: Sink, port: int, n: int) -> float:
    sink.expect(n)
    t0 = time.perf_counter()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
        for i in range(n):
            await smtp.send_message(message(i))
    await wait_for(sink.done)
    return n / (time.perf_counter() - t0)


async def gateway_round(app: Any, token: str, sink: Sink, n: int) -> float:
    from models.mail import EmailStatus, OutboundEmail

    recipients = [{"email": f"r{i}@bulk.test", "name": f"R{i}"} for i in range(n)]
    body = graphql_body(
        BULK,
        {
            "i": {
                "recipients": recipients,
                "template": "admin_broadcast",
                "variables": {"headline": "News", "message": "Hello all"},
            }
        },
    )
    sink.expect(n)
    t0 = time.perf_counter()
    answer = (
        await call(app, "POST", "/graphql", body, headers={"Authorization": f"Bearer {token}"})
    ).json()
    assert "errors" not in answer, answer
    batch = answer["data"]["sendBulkEmail"]["batch"]
    assert batch["queued"] == n, batch
    await wait_for(sink.done)
    from schema.relay import decode_id

    batch_id = decode_id(batch["id"], "EmailBatch")
    while await OutboundEmail.filter(batch_id=batch_id, status=EmailStatus.SENT.value).count() < n:
        await asyncio.sleep(0.005)
    return n / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()

    sink = Sink()
    port = 20000 + os.getpid() % 20000
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    database_url = None
    if args.postgres:
        import asyncpg

        admin_url = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
        name = f"sb_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(admin_url.replace("postgres://", "postgresql://", 1))
        await admin.execute(f'CREATE DATABASE "{name}"')
        database_url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        from gateway.app import create_app
        from gateway.worker import Runtime

        overrides: dict[str, Any] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "email_from": "Bench <mail@bench.test>",
            "job_poll_seconds": 0.02,
            "rate_limit_enabled": False,
        }
        if database_url:
            overrides["database_url"] = database_url
        settings = bench_settings(**overrides)
        await open_bench_store(settings)
        app = create_app(settings, configure_logs=False)
        runtime = Runtime(settings, services=app.state.services, run_jobs=True)
        await runtime.start()
        try:
            token = await register_owner(app)
            await gateway_round(app, token, sink, 100)  # warm-up
            await baseline_round(sink, port, 100)
            gw_rates, base_rates = [], []
            for _ in range(args.rounds):
                gw_rates.append(await gateway_round(app, token, sink, args.recipients))
                base_rates.append(await baseline_round(sink, port, args.recipients))
        finally:
            await runtime.stop()
            from tortoise import Tortoise

            await Tortoise.close_connections()
        gw, base = statistics.median(gw_rates), statistics.median(base_rates)
        store = "PostgreSQL" if args.postgres else "SQLite"
        print(f"bulk mail over SMTP, {args.recipients} recipients, {store}, {args.rounds} rounds")
        gw_rounds, base_rounds = [round(r) for r in gw_rates], [round(r) for r in base_rates]
        print(f"  gateway  (sendBulkEmail + jobs): {gw:8.0f} msg/s  rounds {gw_rounds}")
        print(f"  baseline (aiosmtplib, 1 conn):   {base:8.0f} msg/s  rounds {base_rounds}")
        print(f"  ratio gateway/baseline: {gw / base:.2f}x (target >= 0.5)")
    finally:
        controller.stop()
        if database_url:
            await admin.execute(f'DROP DATABASE "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
