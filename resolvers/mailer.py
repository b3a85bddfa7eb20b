"""The one door outgoing account mail goes through.

Until an email provider is configured, `RecordingMailer` stores every message in
`recorded_mail` (readable by operators and tests) and logs that it did; it never
drops a message silently.
"""

from __future__ import annotations

import logging
from typing import Protocol

from kit.text import header_safe
from models.mail import RecordedMail

log = logging.getLogger("switchboard.mail")


class Mailer(Protocol):
    async def send(self, *, to: str, subject: str, body: str, kind: str) -> None: ...


class RecordingMailer:
    async def send(self, *, to: str, subject: str, body: str, kind: str) -> None:
        await RecordedMail.create(
            recipient=header_safe(to), subject=header_safe(subject), body=body, kind=kind
        )
        log.info("mail recorded (no email provider configured)", extra={"kind": kind})
