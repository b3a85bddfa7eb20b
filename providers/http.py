"""The shared outbound HTTP layer every provider client calls through.

One `ProviderHTTP` per provider (the registry hands them out) owns:

- one pooled aiohttp session, opened on first use and closed by the app's
  lifespan (`ProviderRegistry.aclose`); the pool is bounded (`pool_size`) and a
  semaphore caps calls in flight (`concurrency`), so a burst queues here instead of
  opening hundreds of sockets to the vendor;
- connect, read and total timeouts for every attempt (per call overridable);
- retries with full-jitter exponential backoff that honour `Retry-After` and
  rate-limit reset headers, inside a total time budget. Only for idempotent methods
  (GET/HEAD/PUT/DELETE/OPTIONS) or calls that carry an idempotency key; never for a
  4xx other than 408/425/429. Two cases are safe whatever the method, because the
  vendor provably did nothing: a connection that could not be opened (nothing was
  sent) and a 429 (refused before processing). A connection cut or a read timeout
  mid-call is retried only when the call is idempotent;
- a circuit breaker per provider (opened by 5xx, 408, timeouts and connection
  errors; caller 4xx errors count as the vendor being up) and one per credential
  for auth failures (401/403), so one tenant's revoked key pauses only that key. The
  provider's breaker counts the shared credentials only (system key, sandbox): a call
  made with a tenant's or user's own credential (`own_credential=True`), perhaps to a
  base URL of its own, neither asks nor feeds it; every failure of such a call counts
  against that credential's breaker alone, so one tenant's dead endpoint never opens
  the provider for everyone (across processes too, the breakers living in Redis);
- tenant- and user-set URLs (`guard_url=True`) go through the outbound guard
  (`kit.ssrf`): checked before the call, and dialled by a second pooled session
  whose resolver checks and pins every address, never following redirects; a refused
  address raises `UnsafeDestination` (BAD_USER_INPUT) and touches no breaker;
- an outbound rate limit per provider and credential (kit.ratelimit, shared
  through Redis when configured): over budget it waits when the window frees soon,
  else fails with a retryable `RateLimitedLocally`;
- metrics (kit.metrics), per-provider health stats, and `on_failure` hooks
  called with a `FailureEvent` for every call that finally failed.

The admission path and the books live in `providers.admission.Gate`, the retry loop
in `providers.call.Call`; this module adds the sessions and the HTTP attempt. A client
built on a vendor SDK (which brings its own HTTP transport) gets the very same `Call`
from `guard()`: only the attempt differs.

Vendor clients build URLs and headers, call `request()`, and get a
`ProviderResponse` for 2xx/3xx or a `ProviderError`. A vendor with its own error
body shape passes `parse_error=` (status, headers, body) -> (vendor_code, message).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import aiohttp

from kit.ratelimit import RateLimiter
from kit.ssrf import Policy, check_url, guarded_session
from providers.admission import (
    MAX_MESSAGE,
    FailureHook,
    Gate,
    ProviderStats,
    cached_fingerprint,
    fingerprint,
)
from providers.breaker import BreakerPolicy, BreakerState, BreakerStore, MemoryBreakerStore
from providers.call import CLEAR, Call, Classifier
from providers.errors import ProviderError
from providers.retry import IDEMPOTENT_METHODS, RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

# Part of this module's API: clients and the registry import them from here.
__all__ = [
    "ErrorParser",
    "FailureHook",
    "ProviderConfig",
    "ProviderHTTP",
    "ProviderResponse",
    "ProviderStats",
    "Timeouts",
    "default_error_parser",
    "fingerprint",
]

ErrorParser = Callable[[int, Mapping[str, str], bytes], tuple[str | None, str]]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0  # opening the TCP/TLS connection (and waiting for a pool slot)
    read: float = 20.0  # between two reads of the answer: a stalled vendor trips this
    total: float = 30.0  # one attempt, end to end (retries are clamped to the call's budget)

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.total, connect=self.connect, sock_connect=self.connect, sock_read=self.read
        )


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    pool_size: int = 50  # TCP connections kept to the vendor (aiohttp TCPConnector limit)
    concurrency: int = 50  # calls in flight from this process
    rate_limit: str | None = None  # `limits` notation, per credential, e.g. "2/second"
    rate_limit_max_wait: float = 1.0  # wait this long for the window to free, then fail
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    idempotency_header: str = "Idempotency-Key"
    user_agent: str = "switchboard/0.1"


@dataclass(slots=True)
class ProviderResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None


def default_error_parser(
    status: int, headers: Mapping[str, str], body: bytes
) -> tuple[str | None, str]:
    """Vendor code and message from the common JSON error shapes, else the raw text."""
    try:
        data = jsonlib.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            message = err.get("message") or ""
            return (str(code) if code else None), str(message)
        code = data.get("code") or data.get("name") or data.get("type")
        if isinstance(err, str) and not code:
            code = err
        message = data.get("message") or data.get("detail") or (err if isinstance(err, str) else "")
        return (str(code) if code else None), str(message)
    text = body.decode("utf-8", "replace").strip() if body else ""
    return None, text


def _transport_failure(exc: BaseException) -> tuple[str, str]:
    """(vendor code, message) for a failure below HTTP. `connect_failed` says nothing was
    sent (`providers.retry.NOTHING_SENT`), so even a call with an effect may be tried
    again; after a timeout or a cut mid-call the request may have reached the vendor."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return "connect_failed", f"could not connect: {type(exc).__name__}"
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout", "no answer within the timeout"
    return "connection_lost", f"connection failed mid-call: {type(exc).__name__}"


def _own_errors(exc: BaseException, operation: str) -> ProviderError | None:
    """`request()`'s classification: its attempt raises ProviderError for everything the
    vendor (or the network) did; anything else is the caller's own and propagates."""
    return exc if isinstance(exc, ProviderError) else None


class ProviderHTTP:
    """The resilient HTTP door to one provider. Safe to share by every task in a process."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        breakers: BreakerStore | None = None,
        limiter: RateLimiter | None = None,
        hooks: list[FailureHook] | None = None,
        stats: ProviderStats | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.config = config
        # The outbound guard's policy for tenant- and user-set URLs (OUTBOUND_ALLOWED_HOSTS).
        self.policy = policy if policy is not None else Policy()
        self.name = config.name
        self.gate = Gate(
            config,
            breakers=breakers or MemoryBreakerStore(),
            limiter=limiter,
            hooks=hooks if hooks is not None else [],
            stats=stats or ProviderStats(),
        )
        self._session: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None
        self._client_timeout = config.timeouts.client_timeout()

    @property
    def breakers(self) -> BreakerStore:
        return self.gate.breakers

    @property
    def limiter(self) -> RateLimiter | None:
        return self.gate.limiter

    @property
    def hooks(self) -> list[FailureHook]:
        return self.gate.hooks

    @property
    def stats(self) -> ProviderStats:
        return self.gate.stats

    # Session ----------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The provider's pooled session, opened on first use (inside the running loop)."""
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.pool_size,
                limit_per_host=self.config.pool_size,
                ttl_dns_cache=300,
                keepalive_timeout=30,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._client_timeout,
                headers={"User-Agent": self.config.user_agent},
                raise_for_status=False,
                auto_decompress=True,
            )
            self._session = session
        return session

    def guarded_session(self) -> aiohttp.ClientSession:
        """The pooled session for tenant- and user-set URLs: every request and address
        passes the outbound guard (checked and pinned, no DNS cache)."""
        session = self._guarded
        if session is None or session.closed:
            session = guarded_session(
                self.policy,
                limit=self.config.pool_size,
                timeout=self._client_timeout,
                headers={"User-Agent": self.config.user_agent},
                raise_for_status=False,
            )
            self._guarded = session
        return session

    async def aclose(self) -> None:
        for session in (self._session, self._guarded):
            if session is not None and not session.closed:
                await session.close()
        self._session = self._guarded = None

    # Calls ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        credential: str | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeouts: Timeouts | None = None,
        parse_error: ErrorParser = default_error_parser,
        labels: Mapping[str, str] | None = None,
        own_credential: bool = False,
        guard_url: bool = False,
    ) -> ProviderResponse:
        """Make one logical call (maybe several attempts). Raises ProviderError, or
        UnsafeDestination when `guard_url` and the URL's address is refused.

        `own_credential`: the credential is a tenant's or user's own (not the system key
        or the sandbox): its failures trip its own breaker only. `guard_url`: the URL
        (a base URL) was set by a tenant or user: it is dialled through the guard."""
        method = method.upper()
        if guard_url:
            url = check_url(url, self.policy).url  # exactly what the guarded session dials
        if idempotency_key:
            headers = {**(headers or {}), self.config.idempotency_header: idempotency_key}
        client_timeout = timeouts.client_timeout() if timeouts else self._client_timeout
        gate = self.gate
        fp = cred_name = None
        if credential:
            fp, cred_name = gate.identify(credential)
        shared = not (own_credential and credential)
        started = time.perf_counter()
        response = None
        failure: Exception | None = None
        # The common case — breakers clear, a free slot, budget at hand — makes its first
        # try right here, and builds the call's `Call` only when that try needs more than
        # its books kept: every coroutine frame between the caller and aiohttp is paid
        # again at each of the request's suspensions, and the object itself was the
        # biggest single cost left on this path. The same try as `_send` makes.
        tried = gate.take_now(fp, cred_name, shared)
        if tried:
            session = self.guarded_session() if guard_url else self.session()
            try:
                if json is None and data is None and params is None:  # fewer kwargs to pack
                    sending = session.request(
                        method, url, headers=headers, timeout=client_timeout,
                        allow_redirects=False,
                    )  # fmt: skip
                else:
                    sending = session.request(
                        method, url, headers=headers, json=json, data=data, params=params,
                        timeout=client_timeout, allow_redirects=False,
                    )  # fmt: skip
                async with sending as resp:
                    body = await resp.read()
                    status = resp.status
                    resp_headers = resp.headers
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    gate.slots.release()  # cancelled: nothing recorded
                    raise
                failure = self._transport_error(exc, operation)
            else:
                if status >= 400:
                    failure = self._status_error(status, resp_headers, body, operation, parse_error)
                else:
                    response = ProviderResponse(status, resp_headers, body)
                    if gate.done_now(operation, time.perf_counter() - started, cred_name, shared):
                        return response
        call = Call(
            gate,
            operation,
            credential=credential,
            idempotent=method in IDEMPOTENT_METHODS or bool(idempotency_key),
            classify=_own_errors,
            queue_timeout=client_timeout.total,
            labels=labels,
            own_credential=own_credential,
            retry_refusals=True,
        )
        if tried:
            call.took_first_try(started)
            if failure is not None:
                await call.failed_try(CLEAR, failure)  # recorded: waits, or raises
            else:
                call.tried_well(CLEAR)  # a breaker has something to hear: finish()
        if response is None:
            # The retry loop (or the first try, when it had to wait or ask a breaker).
            # Its try is a method bound with partial, not a closure: a closure would turn
            # every local above into a cell, read slower all along the hot path.
            response = await call.attempt(
                partial(
                    self._send, call, method, url, headers, json, data, params,
                    client_timeout, parse_error, guard_url,
                )
            )  # fmt: skip
        if not call.finish_now():
            await call.finish()
        return response

    async def _send(
        self,
        call: Call,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        json: Any,
        data: bytes | str | None,
        params: Mapping[str, str] | None,
        client_timeout: aiohttp.ClientTimeout,
        parse_error: ErrorParser,
        guard_url: bool,
    ) -> ProviderResponse:
        """One try of `request()`: a 2xx/3xx answer, or a ProviderError."""
        timeout = client_timeout
        if call.attempts > 1:
            # Never let a retry run past the call's total budget.
            left = self.config.retry.budget - call.elapsed()
            if timeout.total is None or left < timeout.total:
                timeout = aiohttp.ClientTimeout(
                    total=max(0.05, left),
                    connect=timeout.connect,
                    sock_connect=timeout.sock_connect,
                    sock_read=timeout.sock_read,
                )
        session = self.guarded_session() if guard_url else self.session()
        try:
            async with session.request(
                method, url, headers=headers, json=json, data=data, params=params,
                timeout=timeout, allow_redirects=False,
            ) as resp:  # fmt: skip
                body = await resp.read()
                status = resp.status
                resp_headers = resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc, call.operation) from None
        if status < 400:
            return ProviderResponse(status, resp_headers, body)
        raise self._status_error(status, resp_headers, body, call.operation, parse_error)

    def _transport_error(self, exc: Exception, operation: str) -> Exception:
        """What a try that raised `exc` below HTTP failed with: a retryable ProviderError
        (anything else, e.g. the caller's own bug, stays as it is)."""
        if not isinstance(exc, (aiohttp.ClientError, TimeoutError)):
            return exc
        code, message = _transport_failure(exc)
        error = ProviderError(
            self.name, operation, vendor_code=code, message=message, retryable=True
        )
        # As `raise ... from None` would leave it: the cause hidden, the context kept
        # (the outbound guard's refusal is found there, see kit.ssrf.refusal_in).
        error.__context__ = exc
        error.__suppress_context__ = True
        return error

    def _status_error(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        operation: str,
        parse_error: ErrorParser,
    ) -> ProviderError:
        vendor_code, message = parse_error(status, headers, body)
        retryable = status in RETRYABLE_STATUSES
        return ProviderError(
            self.name,
            operation,
            status=status,
            vendor_code=vendor_code,
            message=(message or f"HTTP {status}")[:MAX_MESSAGE],
            retryable=retryable,
            retry_after=parse_retry_after(headers, status) if retryable else None,
        )

    def guard(
        self,
        operation: str,
        *,
        credential: str | None = None,
        idempotent: bool,
        classify: Classifier | None = None,
        slot: asyncio.Semaphore | None = None,
        queue_timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        own_credential: bool = False,
    ) -> Call:
        """The layer around one logical call made through a vendor SDK: the same `Call`
        as `request()`, with the SDK's call as the attempt (see `providers.call`).

            async with http.guard("chat.completions", credential=key, idempotent=False,
                                  classify=to_provider_error) as call:
                completion = await call.attempt(lambda: client.chat.completions.create(...))

        `credential`: the secret the call uses (only its fingerprint is kept), for the
        per-credential breaker and rate budget. `classify(exc, operation)` turns what the
        SDK raised into a `ProviderError` (default: `providers.call.classify_unexpected`).
        `slot`: a semaphore to queue on instead of the provider's own (e.g. one per key),
        for at most `queue_timeout` seconds (default: the attempt's total timeout).
        `own_credential`: a tenant's or user's own credential (see `request()`)."""
        return Call(
            self.gate,
            operation,
            credential=credential,
            idempotent=idempotent,
            classify=classify,
            slot=slot,
            queue_timeout=queue_timeout,
            labels=labels,
            own_credential=own_credential,
        )

    # Breakers ---------------------------------------------------------------------

    async def breaker_state(self) -> tuple[BreakerState, int]:
        return await self.gate.breaker_state()

    async def credential_breaker_state(self, credential: str) -> tuple[BreakerState, int]:
        """One credential's breaker (what a tenant's own key sees instead of the provider's)."""
        return await self.gate.breaker_state(
            self.gate.credential_name(cached_fingerprint(credential))
        )


class BearerClient:
    """One credential's view of a vendor whose API takes `Authorization: Bearer <key>`.
    Cheap to build per call; the session (`http`) is shared. Vendor clients subclass it
    and set `API_URL`."""

    API_URL: str = ""

    def __init__(
        self,
        http: ProviderHTTP,
        api_key: str,
        *,
        base_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        own_credential: bool = False,
        guard_url: bool = False,
    ) -> None:
        self.http = http
        self._api_key = api_key
        self.base_url = (base_url or self.API_URL).rstrip("/")
        self.labels = dict(labels or {})  # e.g. tenant id, credential source: for error logs
        # A tenant's or user's own key (its breaker only), and a base URL they set (dialled
        # through the outbound guard): see `ProviderHTTP.request`.
        self.own_credential = own_credential
        self.guard_url = guard_url

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}


C = TypeVar("C")


class SdkClients(Generic[C]):
    """A vendor SDK's clients, one per credential, base URL and guard setting (building
    one costs a millisecond or more), at most `limit` of them (the oldest goes first: its
    HTTP goes through the layer's shared session, so dropping it leaks no connection)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._clients: dict[Hashable, C] = {}

    def get(self, slot: Hashable, make: Callable[[], C]) -> C:
        client = self._clients.get(slot)
        if client is None:
            if len(self._clients) >= self.limit:
                self._clients.pop(next(iter(self._clients)))
            client = self._clients[slot] = make()
        return client

    def take_all(self) -> list[C]:
        """Every client, forgotten here (to close them)."""
        clients, self._clients = list(self._clients.values()), {}
        return clients
