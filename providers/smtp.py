"""SMTP (RFC 5321) with aiosmtplib: the mail fallback when Resend cannot take a message.

`send(config, message)` hands one `email.message.EmailMessage` to the server: implicit TLS
(`security="tls"`, or `auto` on port 465), STARTTLS (`starttls`: required; `auto`: when
the server offers it), or plain (`none`, a local relay); AUTH when a username is set.

Every failure is a `ProviderError(provider="smtp")` whose `retryable` says what it means:
a 5xx reply (a refused recipient, sender or message) is permanent — another try or
another provider would be refused the same way; a 4xx reply, a timeout, a refused or
cut connection and a failed login are transient.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib

from kit.ssrf import Policy, UnsafeDestination, resolve_checked
from providers.errors import ProviderError

PROVIDER = "smtp"
OPERATION = "send_email"

Security = Literal["auto", "starttls", "tls", "none"]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    username: str = ""
    password: str = ""
    security: Security = "auto"
    timeout: float = 20.0
    tls_context: ssl.SSLContext | None = None  # default: the system's trusted roots

    def __repr__(self) -> str:  # never the password
        return f"SmtpConfig(host={self.host!r}, port={self.port}, security={self.security!r})"


def _error(status: int | None, message: str, *, retryable: bool) -> ProviderError:
    return ProviderError(PROVIDER, OPERATION, status=status, message=message, retryable=retryable)


def _from_reply(code: int, message: str) -> ProviderError:
    return _error(code, message, retryable=not 500 <= code < 600)


def _tls_mode(config: SmtpConfig) -> tuple[bool, bool | None]:
    """(implicit TLS, STARTTLS: True required / None when offered / False never)."""
    implicit = config.security == "tls" or (config.security == "auto" and config.port == 465)
    if implicit or config.security == "none":
        return implicit, False
    if config.security == "starttls":
        return False, True
    return False, None


def _translate(exc: BaseException) -> ProviderError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        permanent = bool(codes) and all(500 <= c < 600 for c in codes)
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return _error(
            max(codes) if codes else None,
            f"recipients refused: {detail}"[:500],
            retryable=not permanent,
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Our credentials, not the message: another provider or a later try may do.
        return _error(exc.code, f"login refused: {exc.message}"[:500], retryable=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _from_reply(exc.code, str(exc.message)[:500])
    if isinstance(exc, UnsafeDestination):
        return _error(None, f"refused address: {exc.message}"[:500], retryable=False)
    return _error(None, f"{type(exc).__name__}: {exc}"[:500], retryable=True)


_FAILURES = (aiosmtplib.SMTPException, OSError, TimeoutError, UnsafeDestination)
QUIT_TIMEOUT = 2.0  # seconds a closing connection waits for the server's QUIT reply


class Session:
    """One SMTP connection for many messages (a bulk send), opened on first use and
    opened again when the server dropped it. `policy` (a tenant's own relay): the host is
    resolved, every address checked by the outbound guard, and the connection made to the
    checked address, so a name cannot be re-pointed inside the network between the check
    and the dial."""

    def __init__(self, config: SmtpConfig, *, policy: Policy | None = None) -> None:
        self.config = config
        self.policy = policy
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self.config
        implicit, start_tls = _tls_mode(config)
        options: dict[str, Any] = {
            "hostname": config.host,
            "username": config.username or None,
            "password": config.password if config.username else None,
            "use_tls": implicit,
            "start_tls": start_tls,
            "tls_context": config.tls_context if (implicit or start_tls is not False) else None,
            "timeout": config.timeout,
        }
        if self.policy is None:
            options["port"] = config.port
        else:
            options["sock"] = await _pinned_socket(config, self.policy)
        client = aiosmtplib.SMTP(**options)
        await client.connect()
        return client

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` to its recipients; raises ProviderError (module docstring)."""
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            await self._client.send_message(message)
        except _FAILURES as exc:
            if not isinstance(
                exc, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused
            ):
                await self.close()  # a broken connection: the next message opens another
            raise _translate(exc) from None

    async def close(self) -> None:
        """QUIT politely, briefly: a server that does not answer (or a connection left
        mid-message by a cancelled send) is just closed, never waited on for the whole
        timeout — a stopping worker must not hang here."""
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await asyncio.wait_for(client.quit(), QUIT_TIMEOUT)
        except _FAILURES:
            client.close()
        except BaseException:  # cancelled while closing: drop the socket, go on cancelling
            client.close()
            raise

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _pinned_socket(config: SmtpConfig, policy: Policy) -> socket.socket:
    addresses = await resolve_checked(config.host, config.port, policy)
    if not addresses:
        raise UnsafeDestination(f"{config.host} does not resolve")
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, config.port)), config.timeout)
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(str(exc))
    raise last or OSError("no address to connect to")


async def send(config: SmtpConfig, message: EmailMessage, *, policy: Policy | None = None) -> None:
    """Deliver one message on a connection of its own; raises ProviderError."""
    async with Session(config, policy=policy) as session:
        await session.send(message)
