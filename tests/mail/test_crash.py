"""A worker killed in the middle of an SMTP send: the message is sent after a restart.

The SMTP server here takes the message's DATA and never answers it, so the worker is
killed (SIGKILL: no shutdown code) between handing the message over and hearing back —
the at-least-once window of SMTP. The message is still QUEUED in the store; another
worker takes the job once its lease is over and delivers it. Whether the first server
delivered its copy is what nobody can know: the next try uses the same Message-ID.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from models.mail import OutboundEmail
from models.tenants import Tenant
from resolvers import mail
from tests.conftest import Store, eventually, make_settings
from tests.mail.conftest import Inbox, serve, smtp_settings
from tests.processes import process_env, start_worker


class Stall:
    """Takes DATA and never answers it."""

    def __init__(self) -> None:
        self.got_data = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.got_data.set()
        await asyncio.sleep(3600)
        return "250 OK"


async def test_a_worker_killed_mid_send_sends_after_restart(
    store: Store, worker: Any, inbox: tuple[Inbox, int], tmp_path: Path
) -> None:
    if store.kind != "postgres":
        pytest.skip("a worker process beside the test needs PostgreSQL (SQLite is one process)")
    box, good_port = inbox
    stall = Stall()
    controller, stall_port = serve(stall)  # type: ignore[arg-type]
    tenant = await Tenant.create(name="Crashco", slug=f"crash-{uuid.uuid4().hex[:8]}")
    body = mail.render(
        "system_alert", {"severity": "INFO", "title": "t", "message": "m"}, organization="Crashco"
    )
    row = await mail.queue(
        settings=make_settings(),
        tenant_id=tenant.id,
        kind="direct",
        to=mail.Recipient("ops@example.com"),
        body=body,
    )
    env = process_env(
        store.url,
        job_lease_seconds=1,
        job_poll_seconds=0.05,
        sandbox_enabled="false",
        smtp_host="127.0.0.1",
        smtp_port=stall_port,
        smtp_security="none",
        smtp_timeout_seconds=600,
    )
    first = start_worker(env, tmp_path / "w1.log")
    try:
        await eventually(
            lambda: asyncio.to_thread(stall.got_data.wait, 0.05), "the send is under way"
        )
    finally:
        first.kill()
        controller.stop()
    stuck = await OutboundEmail.get(id=row.id)
    assert (stuck.status, stuck.attempts) == ("QUEUED", 0)

    await worker(sandbox_enabled=False, job_lease_seconds=1, **smtp_settings(good_port))

    async def sent() -> OutboundEmail | None:
        found = await OutboundEmail.get(id=row.id)
        return found if found.status == "SENT" else None

    done = await eventually(sent, "the restarted worker sends it")
    assert (done.provider, done.attempts) == ("smtp", 1)
    [message] = box.to("ops@example.com")
    assert message["Message-ID"] == row.message_id
