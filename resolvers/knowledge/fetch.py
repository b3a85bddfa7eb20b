"""A URL source's content, fetched as a tenant's outbound call: through the outbound
guard (`kit.ssrf`: every address checked and pinned, redirects followed by hand, each
hop checked again) on the provider layer's `web` door (timeouts, retries of this read,
the failure log; the tenant's own breaker, so one tenant's dead site never pauses another
tenant's fetches), bounded in size and in type."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from kit.ssrf import check_url
from providers.errors import ProviderError
from providers.http import ProviderHTTP
from providers.retry import RETRYABLE_STATUSES, parse_retry_after
from resolvers.knowledge.extract import SUPPORTED, Unreadable

PROVIDER = "web"
MAX_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 3
READ = 64 * 1024


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes


def _failure(exc: BaseException, operation: str) -> ProviderError | None:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        code, message = "connect_failed", "could not connect"
    elif isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        code, message = "timeout", "no answer in time"
    elif isinstance(exc, aiohttp.ClientError):
        code, message = "connection_lost", f"the connection failed: {type(exc).__name__}"
    else:
        return None
    return ProviderError(PROVIDER, operation, vendor_code=code, message=message, retryable=True)


async def _get(http: ProviderHTTP, target: str) -> Fetched | str:
    """One GET through the guard: the content, or where a redirect points."""
    session = http.guarded_session()
    accept = ", ".join(sorted(SUPPORTED))
    async with session.get(target, allow_redirects=False, headers={"Accept": accept}) as resp:
        if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
            return urljoin(target, resp.headers["Location"])
        if resp.status >= 400:
            retryable = resp.status in RETRYABLE_STATUSES
            raise ProviderError(
                PROVIDER, "fetch", status=resp.status, vendor_code=f"http_{resp.status}",
                message=f"the site answered HTTP {resp.status}", retryable=retryable,
                retry_after=parse_retry_after(resp.headers, resp.status) if retryable else None,
            )  # fmt: skip
        kind = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind not in SUPPORTED:
            raise Unreadable(f"{kind or 'an unnamed type'} is not a document type")
        if resp.content_length is not None and resp.content_length > MAX_BYTES:
            raise Unreadable(f"larger than {MAX_BYTES // (1024 * 1024)} MB")
        body = bytearray()
        while chunk := await resp.content.read(READ):
            body += chunk
            if len(body) > MAX_BYTES:
                raise Unreadable(f"larger than {MAX_BYTES // (1024 * 1024)} MB")
        return Fetched(target, resp.headers.get("Content-Type", kind), bytes(body))


async def fetch(http: ProviderHTTP, url: str, *, tenant_id: int) -> Fetched:
    """GET `url` (and up to three redirects); raises ProviderError (the site failed),
    UnsafeDestination (an address the guard refuses) or Unreadable (too large, a type
    that is no document)."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        target = check_url(current, http.policy).url
        call = http.guard(
            "fetch", credential=f"knowledge-tenant-{tenant_id}", idempotent=True,
            classify=_failure, own_credential=True, labels={"tenant_id": str(tenant_id)},
        )  # fmt: skip
        answer = await call.run(functools.partial(_get, http, target))
        if isinstance(answer, Fetched):
            return answer
        current = answer
    raise Unreadable(f"more than {MAX_REDIRECTS} redirects")
