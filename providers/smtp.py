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

import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

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


async def send(config: SmtpConfig, message: EmailMessage) -> None:
    """Deliver `message` to its recipients; raises ProviderError (see the module docstring)."""
    implicit = config.security == "tls" or (config.security == "auto" and config.port == 465)
    start_tls: bool | None
    if implicit or config.security == "none":
        start_tls = False
    elif config.security == "starttls":
        start_tls = True
    else:
        start_tls = None  # when the server offers it
    try:
        await aiosmtplib.send(
            message,
            hostname=config.host,
            port=config.port,
            username=config.username or None,
            password=config.password if config.username else None,
            use_tls=implicit,
            start_tls=start_tls,
            tls_context=config.tls_context if (implicit or start_tls is not False) else None,
            timeout=config.timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        permanent = bool(codes) and all(500 <= c < 600 for c in codes)
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        raise _error(
            max(codes) if codes else None,
            f"recipients refused: {detail}"[:500],
            retryable=not permanent,
        ) from None
    except aiosmtplib.SMTPAuthenticationError as exc:
        # Our credentials, not the message: another provider or a later try may do.
        raise _error(exc.code, f"login refused: {exc.message}"[:500], retryable=True) from None
    except aiosmtplib.SMTPResponseException as exc:
        raise _from_reply(exc.code, str(exc.message)[:500]) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise _error(None, f"{type(exc).__name__}: {exc}"[:500], retryable=True) from None
