"""A real dovecot for the mailbox tests: started once per session in a temporary
directory (tests/mailbox/dovecot.py), emptied before each test. In CI (`CI=true`) a
missing dovecot fails the tests; elsewhere they are skipped with the reason."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI
from tests.mailbox import dovecot as server


@pytest.fixture(scope="session")
def dovecot() -> Iterator[server.Dovecot]:
    binary = server.find_binary()
    if binary is None:
        message = "dovecot is not installed (apt-get install dovecot-imapd)"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    running = server.start(binary)
    try:
        yield running
    finally:
        server.stop(running)


class Boxes:
    """Test-side access to the server's mailboxes, with the standard library's imaplib
    (a different client from the one under test): APPEND, flags, emptying."""

    def __init__(self, dovecot: server.Dovecot) -> None:
        self.dovecot = dovecot

    def _session(self, user: str) -> imaplib.IMAP4:
        session = imaplib.IMAP4("127.0.0.1", self.dovecot.plain_port, timeout=10)
        session.login(user, self.dovecot.users[user])
        return session

    def append(self, user: str, raw: bytes) -> None:
        session = self._session(user)
        try:
            status, _ = session.append("INBOX", None, None, raw)
            assert status == "OK"
        finally:
            session.logout()

    def flags(self, user: str) -> list[set[str]]:
        """Each message's flags, in order (without the session-bound \\Recent)."""
        session = self._session(user)
        try:
            session.select("INBOX", readonly=True)
            status, data = session.uid("FETCH", "1:*", "(FLAGS)")
            assert status == "OK"
            found = []
            for line in data:
                if isinstance(line, bytes) and (m := re.search(rb"FLAGS \(([^)]*)\)", line)):
                    found.append(set(m.group(1).decode().split()) - {"\\Recent"})
            return found
        finally:
            session.logout()

    def set_unseen(self, user: str) -> None:
        session = self._session(user)
        try:
            session.select("INBOX")
            session.store("1:*", "-FLAGS.SILENT", r"(\Seen)")
        finally:
            session.logout()

    def empty(self, user: str) -> None:
        session = self._session(user)
        try:
            _, [count] = session.select("INBOX")
            if int(count or 0):
                session.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                session.expunge()
        finally:
            session.logout()


@pytest.fixture
def boxes(dovecot: server.Dovecot) -> Iterator[Boxes]:
    handle = Boxes(dovecot)
    for user in dovecot.users:
        handle.empty(user)
    yield handle
