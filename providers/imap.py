"""IMAP (RFC 3501) with aioimaplib: reading a mailbox's unseen messages.

`open_inbox(config)` connects, secures the connection, logs in and selects INBOX; the
`Inbox` it yields lists unseen UIDs (`UID SEARCH UNSEEN`), reads a message's size and
bytes without marking it seen (`RFC822.SIZE`, `BODY.PEEK[]`) and marks it seen
(`UID STORE +FLAGS.SILENT (\\Seen)`) when the caller says so; leaving the block logs
out. Security: implicit TLS (`tls`, port 993), STARTTLS (`starttls`: required, a server
that does not offer it is refused, never read in the clear) or plain (`none`, for a
server on the same machine or network).

`config.dial` is where to connect (an address the outbound guard checked, for a
tenant-set host); `config.host` stays the name TLS verifies the certificate against.

Every failure is a `ProviderError(provider="imap")`. `retryable` says whether the next
poll may do better: a refused, timed-out or cut connection and a server's temporary
reply (`[UNAVAILABLE]`, `[INUSE]`…) are transient; a refused login (`ImapAuthError`,
whose `is_auth_error` is true), a certificate that does not verify, a missing STARTTLS
and other refusals stay refused until someone changes the configuration.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aioimaplib

from providers.errors import ProviderError

PROVIDER = "imap"
DEFAULT_PORT = 993

Security = Literal["tls", "starttls", "none"]
T = TypeVar("T")

# Response codes (RFC 5530) that mean "not now" rather than "no".
_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG", "CONTACTADMIN"})
_CODE_RE = re.compile(rb"^\[([A-Z-]+)")
_UIDVALIDITY_RE = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID_RE = re.compile(rb"UID (\d+)")


@dataclass(frozen=True)
class ImapConfig:
    host: str
    user: str
    password: str
    port: int = DEFAULT_PORT
    security: Security = "tls"
    timeout: float = 30.0  # seconds, for the connection and for each command
    tls_context: ssl.SSLContext | None = None  # default: the system's trusted roots
    dial: str | None = None  # the address to connect to (default: host)

    def __repr__(self) -> str:  # never the password
        return (
            f"ImapConfig(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"security={self.security!r})"
        )


class ImapAuthError(ProviderError):
    """The server refused the login: the credential, not the network."""

    @property
    def is_auth_error(self) -> bool:
        return True


def _error(
    operation: str, message: str, *, retryable: bool, code: str | None = None
) -> ProviderError:
    return ProviderError(
        PROVIDER, operation, vendor_code=code, message=message[:500], retryable=retryable
    )


def _refusal(operation: str, response: Any) -> ProviderError:
    text = b" ".join(bytes(line) for line in response.lines if isinstance(line, bytes | bytearray))
    found = _CODE_RE.match(text)
    code = found.group(1).decode() if found else None
    message = f"{response.result} {text.decode(errors='replace')}".strip()
    if operation == "login" and response.result == "NO":
        return ImapAuthError(
            PROVIDER, operation, vendor_code=code or "AUTHENTICATIONFAILED", message=message[:500]
        )
    return _error(operation, message, retryable=code in _TRANSIENT_CODES, code=code)


class _Client(aioimaplib.IMAP4):
    """aioimaplib's client, dialling `dial` while TLS verifies `server_hostname`."""

    def __init__(self, config: ImapConfig, ssl_context: ssl.SSLContext | None) -> None:
        self._dial = config.dial or config.host
        self._server_hostname = config.host
        super().__init__(config.host, config.port, timeout=config.timeout, ssl_context=ssl_context)

    def create_client(  # type: ignore[override]
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        running = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = aioimaplib.IMAP4ClientProtocol(running, conn_lost_cb)
        self._client_task = running.create_task(
            running.create_connection(
                lambda: self.protocol,
                self._dial,
                port,
                ssl=ssl_context,
                server_hostname=self._server_hostname if ssl_context is not None else None,
            )
        )


def _context(config: ImapConfig) -> ssl.SSLContext:
    return config.tls_context or ssl.create_default_context()


class Inbox:
    """A logged-in connection with INBOX selected (read-write)."""

    def __init__(self, client: _Client, config: ImapConfig, uidvalidity: int) -> None:
        self._client = client
        self._config = config
        self.uidvalidity = uidvalidity

    async def _ok(self, operation: str, call: Awaitable[Any]) -> Any:
        response = await _guarded(operation, call, self._config.timeout)
        if response.result != "OK":
            raise _refusal(operation, response)
        return response

    async def unseen(self) -> list[int]:
        """UIDs of the unseen messages, oldest first."""
        response = await self._ok("search", self._client.uid_search("UNSEEN", charset=None))
        uids: set[int] = set()
        for line in response.lines[:-1]:
            uids.update(int(t) for t in bytes(line).split() if t.isdigit())
        return sorted(uids)

    async def size(self, uid: int) -> int | None:
        """The message's size in bytes, None when no message has this UID any more."""
        response = await self._ok("fetch", self._client.uid("fetch", str(uid), "(RFC822.SIZE)"))
        for line in response.lines:
            if isinstance(line, bytes) and _uid_of(line) == uid and (m := _SIZE_RE.search(line)):
                return int(m.group(1))
        return None

    async def fetch(self, uid: int) -> bytes | None:
        """The whole message, left unseen; None when no message has this UID any more."""
        response = await self._ok("fetch", self._client.uid("fetch", str(uid), "(BODY.PEEK[])"))
        lines = response.lines
        for index, line in enumerate(lines[:-1]):
            following = lines[index + 1]
            if (
                isinstance(line, bytes)
                and b"BODY[]" in line
                and _uid_of(line) == uid
                and isinstance(following, bytearray)
            ):
                return bytes(following)
        return None

    async def mark_seen(self, uid: int) -> None:
        await self._ok("store", self._client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)"))


def _uid_of(line: bytes) -> int | None:
    found = _UID_RE.search(line)
    return int(found.group(1)) if found else None


async def _guarded(operation: str, call: Awaitable[T], seconds: float) -> T:
    """Await one step, turning what can go wrong on the wire into a ProviderError."""
    try:
        return await asyncio.wait_for(call, seconds)
    except ProviderError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise _error(
            operation, f"certificate not trusted: {exc.verify_message}", retryable=False
        ) from None
    except (TimeoutError, aioimaplib.CommandTimeout):
        raise _error(operation, f"no answer within {seconds:g} s", retryable=True) from None
    except (OSError, aioimaplib.AioImapException, EOFError) as exc:
        raise _error(operation, f"{type(exc).__name__}: {exc}", retryable=True) from None


async def _starttls(client: _Client, config: ImapConfig) -> None:
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise _error("starttls", "the server does not offer STARTTLS", retryable=False)
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await protocol.execute(command)
    if response.result != "OK":
        raise _refusal("starttls", response)
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(
        protocol.transport, protocol, _context(config), server_hostname=config.host
    )
    await protocol.capability()  # what the server says before TLS is not to be believed


@asynccontextmanager
async def open_inbox(config: ImapConfig) -> AsyncIterator[Inbox]:
    """Connect, secure, log in and select INBOX; log out when the block ends."""
    implicit = config.security == "tls"
    client = _Client(config, _context(config) if implicit else None)
    try:
        await _guarded("connect", client.wait_hello_from_server(), config.timeout)
        if config.security == "starttls":
            await _guarded("starttls", _starttls(client, config), config.timeout)
        login = await _guarded("login", client.login(config.user, config.password), config.timeout)
        if login.result != "OK":
            raise _refusal("login", login)
        selected = await _guarded("select", client.select("INBOX"), config.timeout)
        if selected.result != "OK":
            raise _refusal("select", selected)
        found = next(
            (m for line in selected.lines if (m := _UIDVALIDITY_RE.search(bytes(line)))), None
        )
        if found is None:
            raise _error("select", "the server sent no UIDVALIDITY", retryable=False)
        yield Inbox(client, config, int(found.group(1)))
    finally:
        await _close(client, config)


async def _close(client: _Client, config: ImapConfig) -> None:
    with suppress(Exception):  # logging out is a courtesy; the connection goes either way
        if client.protocol is not None and client.get_state() in ("AUTH", "SELECTED"):
            await asyncio.wait_for(client.logout(), min(config.timeout, 5.0))
    transport = getattr(client.protocol, "transport", None)
    if transport is not None:
        transport.close()
    task = getattr(client, "_client_task", None)
    if task is not None and not task.done():
        task.cancel()
        with suppress(Exception, asyncio.CancelledError):
            await task


async def verify_key(config: ImapConfig) -> None:
    """The cheap authenticated call: log in and select INBOX (ProviderError otherwise)."""
    async with open_inbox(config):
        pass
