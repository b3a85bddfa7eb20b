"""The shared outbound HTTP layer every provider client calls through.

One `ProviderHTTP` per provider (the registry hands them out) owns:

- one pooled aiohttp session, opened on first use and closed by the app's
  lifespan (`ProviderRegistry.aclose`); the pool is bounded (`pool_size`) and an
  `asyncio.Semaphore` caps calls in flight (`concurrency`), so a burst queues here
  instead of opening hundreds of sockets to the vendor;
- connect, read and total timeouts for every attempt (per call overridable);
- retries (tenacity) with full-jitter exponential backoff that honour
  `Retry-After` and rate-limit reset headers, inside a total time budget. Only for
  idempotent methods (GET/HEAD/PUT/DELETE/OPTIONS) or calls that carry an
  idempotency key; never for a 4xx other than 408/425/429. Two cases are safe
  whatever the method, because the vendor provably did nothing: a connection that
  could not be opened (nothing was sent) and a 429 (refused before processing). A
  connection cut or a read timeout mid-call is retried only when the call is
  idempotent;
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

Vendor clients build URLs and headers, call `request()`, and get a
`ProviderResponse` for 2xx/3xx or a `ProviderError`. A vendor with its own error
body shape passes `parse_error=` (status, headers, body) -> (vendor_code, message).

A client built on a vendor SDK (which brings its own HTTP transport) gets the same
admission and bookkeeping from `guard()` (a `CallGuard`): rate budget, breakers and a
concurrency slot before each attempt, breaker outcome, retries, metrics, health stats
and `on_failure` hooks from what the attempt raised (see `CallGuard`).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json as jsonlib
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import aiohttp
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from tenacity import AsyncRetrying, DoAttempt, DoSleep, RetryCallState, retry_if_exception_type
from tenacity.stop import stop_after_attempt, stop_base, stop_before_delay

from kit import metrics
from kit.ratelimit import RateLimiter, parse_limit
from kit.ssrf import Policy, UnsafeDestination, check_url, guarded_session, refusal_in
from providers.breaker import (
    STATE_GAUGE,
    Admission,
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    MemoryBreakerStore,
)
from providers.errors import CircuitOpen, FailureEvent, ProviderError, RateLimitedLocally
from providers.retry import (
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    RetryNow,
    RetryPolicy,
    parse_retry_after,
    wait_vendor_or_jitter,
)

log = logging.getLogger("switchboard.providers")

FailureHook = Callable[[FailureEvent], Awaitable[None] | None]
ErrorParser = Callable[[int, Mapping[str, str], bytes], tuple[str | None, str]]
Classifier = Callable[[BaseException, str], ProviderError]

MAX_MESSAGE = 500
T = TypeVar("T")
RECENT_WINDOW = 300.0  # seconds of failures the health snapshot counts


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


@dataclass(slots=True)
class ProviderStats:
    """What the health snapshot reads; updated on every call, in this process."""

    calls: int = 0
    failures: int = 0
    recent_failures: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    last_error: str | None = None
    last_error_at: float | None = None
    last_latency: float | None = None
    last_success_at: float | None = None

    def recent_failure_count(self, window: float = RECENT_WINDOW) -> int:
        horizon = time.time() - window
        while self.recent_failures and self.recent_failures[0] < horizon:
            self.recent_failures.popleft()
        return len(self.recent_failures)


def fingerprint(credential: str) -> str:
    """A stable, non-reversible name for a credential (breaker and limiter keys, logs)."""
    return hashlib.sha256(credential.encode()).hexdigest()[:16]


_FINGERPRINTS: dict[str, str] = {}


def _cached_fingerprint(credential: str) -> str:
    fp = _FINGERPRINTS.get(credential)
    if fp is None:
        if len(_FINGERPRINTS) >= 4096:
            _FINGERPRINTS.clear()
        fp = _FINGERPRINTS[credential] = fingerprint(credential)
    return fp


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


_limiter_warned = 0.0


def _limiter_down(provider: str, exc: Exception) -> None:
    global _limiter_warned
    now = time.monotonic()
    if now - _limiter_warned > 10:  # one line per 10 s, not one per call
        _limiter_warned = now
        log.warning(
            "outbound rate-limit store unreachable; not limiting %s: %s",
            provider,
            type(exc).__name__,
        )


class _stop_if_wait_exceeds(stop_base):
    """Give up when the vendor asks for a longer wait than we are willing to make."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.upcoming_sleep > self.limit


class _Failure(Exception):
    """One attempt's failure, classified, before the retry decision."""

    def __init__(self, error: ProviderError, *, sent: bool, breaker_failure: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent  # the request may have reached the vendor
        self.breaker_failure = breaker_failure


def _transport_failure(exc: BaseException) -> tuple[str, str, bool]:
    """(vendor code, message, whether the request may have reached the vendor) for a
    failure below HTTP: a connection that never opened sent nothing, so even a call
    with an effect may be tried again; a timeout or a cut mid-call may have."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return "connect_failed", f"could not connect: {type(exc).__name__}", False
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout", "no answer within the timeout", True
    return "connection_lost", f"connection failed mid-call: {type(exc).__name__}", True


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
        self.breakers: BreakerStore = breakers or MemoryBreakerStore()
        self.limiter = limiter
        self.hooks: list[FailureHook] = hooks if hooks is not None else []
        self.stats = stats or ProviderStats()
        self._session: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None
        self._window: SlidingWindowCounterRateLimiter | MovingWindowRateLimiter | None = None
        self._leases: dict[str, list[Any]] = {}
        self._cred_names: dict[str, str] = {}
        self._lease_locks: dict[str, asyncio.Lock] = {}  # credential -> [units left, valid until]
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._client_timeout = config.timeouts.client_timeout()
        retry = config.retry
        self._stop = (
            stop_after_attempt(retry.max_attempts)
            | stop_before_delay(retry.budget)
            | _stop_if_wait_exceeds(retry.max_retry_after)
        )
        self._wait = wait_vendor_or_jitter(retry)
        self._retry_if = retry_if_exception_type(RetryNow)
        self._metric_children: dict[tuple[str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._gauge = metrics.breaker_state.labels(self.name)
        self._gauge.set(0)

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
        shared = not (own_credential and credential)
        idempotent = method in IDEMPOTENT_METHODS or bool(idempotency_key)
        if idempotency_key:
            headers = {**(headers or {}), self.config.idempotency_header: idempotency_key}
        fp = _cached_fingerprint(credential) if credential else None
        started = time.perf_counter()
        started_mono = time.monotonic()
        attempts = 0
        client_timeout = timeouts.client_timeout() if timeouts else self._client_timeout

        budget = self.config.retry.budget

        async def attempt() -> ProviderResponse:
            nonlocal attempts, client_timeout
            attempts += 1
            if attempts > 1:
                self._retried(operation)
                # Never let a retry run past the call's total budget.
                left = budget - (time.perf_counter() - started)
                if client_timeout.total is None or left < client_timeout.total:
                    client_timeout = aiohttp.ClientTimeout(
                        total=max(0.05, left),
                        connect=client_timeout.connect,
                        sock_connect=client_timeout.sock_connect,
                        sock_read=client_timeout.sock_read,
                    )
            try:
                return await self._attempt(
                    method, url, operation, fp, headers, json, data, params,
                    client_timeout, parse_error, shared, guard_url,
                )  # fmt: skip
            except _Failure as failure:
                err = failure.error
                if err.retryable and (idempotent or not failure.sent):
                    raise RetryNow(err, err.retry_after) from None
                raise err from None

        try:
            try:
                # The first attempt runs outside tenacity: a call that succeeds (nearly
                # all of them) pays nothing for the retry machinery.
                response = await attempt()
            except RetryNow:
                response = await self._retry(attempt, sys.exc_info(), started_mono)
        except RetryNow as exhausted:
            error = exhausted.error
            assert isinstance(error, ProviderError)
            await self._failed(error, operation, started, attempts, fp, labels)
            raise error from None
        except ProviderError as error:
            await self._failed(error, operation, started, attempts, fp, labels)
            raise
        elapsed = time.perf_counter() - started
        self._count(operation, "success", elapsed)
        stats = self.stats
        stats.calls += 1
        stats.last_latency = elapsed
        stats.last_success_at = time.time()
        return response

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
    ) -> CallGuard:
        """This layer around one logical call made through a vendor SDK (see `CallGuard`).

        `credential`: the secret the call uses (only its fingerprint is kept), for the
        per-credential breaker and rate budget. `classify(exc, operation)` turns what the
        SDK raised into a `ProviderError` (default: `classify_unexpected`). `slot`: a
        semaphore to queue on instead of the provider's own (e.g. one per key), for at
        most `queue_timeout` seconds (default: the attempt's total timeout).
        `own_credential`: a tenant's or user's own credential (see `request()`)."""
        return CallGuard(
            self,
            operation,
            credential=credential,
            idempotent=idempotent,
            classify=classify,
            slot=slot,
            queue_timeout=queue_timeout,
            labels=labels,
            own_credential=own_credential,
        )

    async def _retry(
        self,
        attempt: Callable[[], Awaitable[ProviderResponse]],
        first_failure: Any,
        started: float,
    ) -> ProviderResponse:
        """Tenacity's loop (as AsyncRetrying.__call__ runs it), seeded with the failed
        first attempt so its stop and wait rules count that attempt and its time."""
        retrying = AsyncRetrying(
            stop=self._stop, wait=self._wait, retry=self._retry_if, reraise=True
        )
        retrying.begin()
        state = RetryCallState(retry_object=retrying, fn=None, args=(), kwargs={})
        state.start_time = started
        state.set_exception(first_failure)
        while True:
            do = await retrying.iter(retry_state=state)
            if isinstance(do, DoAttempt):
                try:
                    result = await attempt()
                except BaseException:
                    state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                else:
                    state.set_result(result)
            elif isinstance(do, DoSleep):
                state.prepare_for_next_attempt()
                await asyncio.sleep(do)
            else:
                return do  # type: ignore[no-any-return]

    async def _attempt(
        self,
        method: str,
        url: str,
        operation: str,
        fp: str | None,
        headers: Mapping[str, str] | None,
        json: Any,
        data: bytes | str | None,
        params: Mapping[str, str] | None,
        client_timeout: aiohttp.ClientTimeout,
        parse_error: ErrorParser,
        shared: bool = True,
        guard_url: bool = False,
    ) -> ProviderResponse:
        if self.config.rate_limit and self.limiter is not None:
            await self._take_budget(operation, fp)
        cred_name = None
        if fp is not None:
            cred_name = self._cred_names.get(fp)
            if cred_name is None:
                cred_name = self._cred_names[fp] = f"{self.name}:cred:{fp}"
        admission = await self._admit(operation, cred_name, shared)

        semaphore = self._semaphore
        if semaphore.locked():  # queue for a slot, but not past the attempt's timeout
            try:
                await asyncio.wait_for(semaphore.acquire(), client_timeout.total)
            except TimeoutError:
                await self._release_probe(admission, cred_name)
                raise _Failure(
                    ProviderError(
                        self.name, operation, vendor_code="local_concurrency",
                        message="too many calls in flight to this provider",
                        retryable=True, retry_after=1.0,
                    ),
                    sent=False, breaker_failure=False,
                ) from None  # fmt: skip
        else:
            await semaphore.acquire()
        session = self.guarded_session() if guard_url else self.session()
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                json=json,
                data=data,
                params=params,
                timeout=client_timeout,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                status = resp.status
                resp_headers = resp.headers
        except UnsafeDestination:
            # The guard refused the address (DNS answered inside): nobody was called,
            # so no breaker learns anything; the probe slots go back.
            await self._release_probe(admission, cred_name)
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._breaker_failure(admission, cred_name, shared)
            code, message, sent = _transport_failure(exc)
            error = ProviderError(
                self.name, operation, vendor_code=code, message=message, retryable=True
            )
            raise _Failure(error, sent=sent, breaker_failure=True) from None
        finally:
            semaphore.release()

        if status < 400:
            await self._breaker_success(admission, cred_name, provider_ok=shared)
            return ProviderResponse(status, resp_headers, body)

        vendor_code, message = parse_error(status, resp_headers, body)
        retryable = status in RETRYABLE_STATUSES
        error = ProviderError(
            self.name,
            operation,
            status=status,
            vendor_code=vendor_code,
            message=(message or f"HTTP {status}")[:MAX_MESSAGE],
            retryable=retryable,
            retry_after=parse_retry_after(resp_headers, status) if retryable else None,
        )
        if status >= 500 or status == 408:
            await self._breaker_failure(admission, cred_name, shared)
            raise _Failure(error, sent=True, breaker_failure=True)
        if error.is_auth_error and cred_name is not None:
            # The vendor is up (it answered); this key is refused.
            await self._breaker_success(admission, None, provider_ok=shared)
            await self._credential_failure(cred_name, admission[1])
        else:
            await self._breaker_success(admission, cred_name, provider_ok=shared)
        # 429s are not caller errors: the vendor processed nothing, so retrying is safe.
        raise _Failure(error, sent=status != 429, breaker_failure=False)

    # Rate limit -------------------------------------------------------------------

    async def _take_budget(self, operation: str, fp: str | None) -> None:
        """One unit of the provider's outbound budget for this credential.

        Small budgets (under 200 per window, e.g. Resend's 2/second) are taken one
        unit at a time from an exact moving window. Larger ones are drawn from a
        sliding-window counter in leases of 1% (valid for a tenth of the window), so
        a busy process asks the store once per lease instead of once per call. A
        lease's units are counted when taken, so unused ones only under-use the
        budget; the counter's approximation and the leases can overshoot by a few
        percent at most, which matters little at those volumes.
        """
        assert self.limiter is not None and self.config.rate_limit is not None
        key = fp or "-"
        lease = self._leases.get(key)
        if lease is not None and lease[0] > 0 and time.monotonic() < lease[1]:
            lease[0] -= 1
            return
        item = parse_limit(self.config.rate_limit)
        identity = ("outbound", self.name, key)
        size = max(1, item.amount // 100)
        window = self._window
        if window is None:
            # Same storage as kit.ratelimit (memory, or Redis shared by every
            # process). Small budgets use the exact moving window. Large ones use a
            # sliding-window counter (O(1) per draw; the moving window keeps one entry
            # per unit, ~100 us a call at thousands per second) drawn in leases.
            window = self._window = (
                SlidingWindowCounterRateLimiter(self.limiter.storage)
                if size > 1
                else MovingWindowRateLimiter(self.limiter.storage)
            )
        deadline = time.monotonic() + self.config.rate_limit_max_wait
        lock = self._lease_locks.get(key)
        if lock is None:
            lock = self._lease_locks[key] = asyncio.Lock()
        while True:
            async with lock:  # one draw at a time per key: no pile of wasted leases
                lease = self._leases.get(key)
                if lease is not None and lease[0] > 0 and time.monotonic() < lease[1]:
                    lease[0] -= 1  # another task drew a lease while we queued
                    return
                try:
                    allowed = await window.hit(item, *identity, cost=size)
                    if not allowed and size == 1:
                        stats = await window.get_window_stats(item, *identity)
                except Exception as exc:
                    # The limiter's store (Redis) is down: fail open, as the inbound
                    # limits do, rather than stop every call to the provider.
                    _limiter_down(self.name, exc)
                    return
                if allowed:
                    if size > 1:
                        self._leases[key] = [size - 1, time.monotonic() + item.get_expiry() / 10]
                    return
                if size > 1:
                    size = 1  # near the limit: draw single units
                    continue
            wait = max(0.01, stats.reset_time - time.time())
            if time.monotonic() + wait > deadline:
                raise _Failure(
                    RateLimitedLocally(self.name, operation, retry_after=wait),
                    sent=False,
                    breaker_failure=False,
                )
            await asyncio.sleep(wait)

    # Breaker ----------------------------------------------------------------------

    async def _admit(
        self, operation: str, cred_name: str | None, shared: bool = True
    ) -> tuple[bool, bool]:
        """Ask the credential's breaker, then the provider's; (provider probe, cred probe).

        The credential goes first so that a refused key never takes the provider's
        single half-open probe slot. A tenant's or user's own credential (`shared` False)
        asks its own breaker only: the provider's is about the shared credentials."""
        policy = self.config.breaker
        cred = _ADMIT_NONE
        if cred_name is not None:
            cred = await self.breakers.admit(cred_name, policy)
            if not cred.allowed:
                raise CircuitOpen(self.name, operation, cred.retry_after, scope="credential")
        if not shared:
            return False, cred.probe
        provider = await self.breakers.admit(self.name, policy)
        if not provider.allowed:
            if cred.probe and cred_name is not None:  # hand the key's probe slot back
                await self.breakers.failure(cred_name, policy, probe=True)
            self._gauge.set(STATE_GAUGE[provider.state])
            raise CircuitOpen(self.name, operation, provider.retry_after, scope="provider")
        if provider.probe:
            self._gauge.set(STATE_GAUGE[BreakerState.HALF_OPEN])
        return provider.probe, cred.probe

    async def _release_probe(self, admission: tuple[bool, bool], cred_name: str | None) -> None:
        if admission[0]:
            await self.breakers.failure(self.name, self.config.breaker, probe=True)
        if admission[1] and cred_name is not None:
            await self.breakers.failure(cred_name, self.config.breaker, probe=True)

    async def _breaker_success(
        self, admission: tuple[bool, bool], cred_name: str | None, *, provider_ok: bool = True
    ) -> None:
        """The vendor answered: the provider is up (and the key, when `cred_name`)."""
        policy = self.config.breaker
        if provider_ok:
            state = await self.breakers.success(self.name, policy, admission[0])
            if admission[0] or state is not BreakerState.CLOSED:
                self._gauge.set(STATE_GAUGE[state])
        if cred_name is not None:
            await self.breakers.success(cred_name, policy, admission[1])

    async def _breaker_failure(
        self, admission: tuple[bool, bool], cred_name: str | None, shared: bool = True
    ) -> None:
        policy = self.config.breaker
        if not shared and cred_name is not None:
            # A tenant's own credential or base URL failed: that credential's breaker
            # counts it, the provider's (the shared credentials') never does.
            await self._credential_failure(cred_name, admission[1])
            return
        state = await self.breakers.failure(self.name, policy, admission[0])
        self._gauge.set(STATE_GAUGE[state])
        if state is BreakerState.OPEN:
            log.warning("breaker open", extra={"provider": self.name})
        if cred_name is not None and admission[1]:
            # The vendor failed, which says nothing about the key: the key's probe
            # slot is handed back (its breaker re-opens for one more cool-down).
            await self.breakers.failure(cred_name, policy, probe=True)

    async def _credential_failure(self, cred_name: str, probe: bool = False) -> None:
        state = await self.breakers.failure(cred_name, self.config.breaker, probe=probe)
        if state is BreakerState.OPEN:
            log.warning("credential breaker open", extra={"provider": self.name})

    async def breaker_state(self) -> tuple[BreakerState, int]:
        state, failures = await self.breakers.state(self.name)
        self._gauge.set(STATE_GAUGE[state])
        return state, failures

    async def credential_breaker_state(self, credential: str) -> tuple[BreakerState, int]:
        """One credential's breaker (what a tenant's own key sees instead of the provider's)."""
        return await self.breakers.state(f"{self.name}:cred:{_cached_fingerprint(credential)}")

    # Bookkeeping ------------------------------------------------------------------

    def _count(self, operation: str, outcome: str, elapsed: float) -> None:
        key = (operation, outcome)
        child = self._metric_children.get(key)
        if child is None:
            child = self._metric_children[key] = metrics.outbound_calls.labels(
                self.name, operation, outcome
            )
        child.inc()
        hist = self._latency_children.get(operation)
        if hist is None:
            hist = self._latency_children[operation] = metrics.outbound_latency.labels(
                self.name, operation
            )
        hist.observe(elapsed)

    def _retried(self, operation: str) -> None:
        metrics.outbound_retries.labels(self.name, operation).inc()

    async def _failed(
        self,
        error: ProviderError,
        operation: str,
        started: float,
        attempts: int,
        fp: str | None,
        labels: Mapping[str, str] | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        outcome = "circuit_open" if isinstance(error, CircuitOpen) else "failure"
        self._count(operation, outcome, elapsed)
        now = time.time()
        stats = self.stats
        stats.calls += 1
        stats.failures += 1
        stats.recent_failures.append(now)
        stats.last_error = str(error)[:MAX_MESSAGE]
        stats.last_error_at = now
        if not isinstance(error, CircuitOpen):
            stats.last_latency = elapsed
        event = FailureEvent(
            provider=self.name,
            operation=operation,
            status=error.status,
            vendor_code=error.vendor_code,
            message=error.message,
            duration=elapsed,
            attempts=max(1, attempts),
            retryable=error.retryable,
            credential_fingerprint=fp,
            labels=dict(labels or {}),
        )
        for hook in list(self.hooks):
            try:
                result = hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_failure hook failed", extra={"provider": self.name})


_ADMIT_NONE = Admission(True)
_NOTHING_SENT = frozenset({"connect_failed", "local_concurrency"})


def classify_unexpected(provider: str, exc: BaseException, operation: str) -> ProviderError:
    """The default `classify` of `ProviderHTTP.guard()`: a ProviderError stays as it is;
    anything else is an unexpected client failure (not retried, counted against the
    vendor's breaker as an unknown outcome)."""
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(
        provider, operation, vendor_code="client_error",
        message=f"unexpected {type(exc).__name__} from the client", retryable=False,
    )  # fmt: skip


class CallGuard:
    """`ProviderHTTP.request()`'s admission and bookkeeping around a vendor SDK's call.

        async with http.guard("chat.completions", credential=key, idempotent=False,
                              classify=to_provider_error) as call:
            completion = await call.attempt(lambda: client.chat.completions.create(...))

    `attempt(fn)` makes the call, in as many tries as the retry policy allows. Before
    each try: one unit of the outbound rate budget for the credential, the
    credential's then the provider's breaker, then a concurrency slot. Refusals there
    (`RateLimitedLocally`, `CircuitOpen`, `local_concurrency`) end the call at once.
    A try that raises is classified into a `ProviderError` and recorded on the
    breakers (5xx, 408 and errors without a status count against the provider; a
    401/403 against the credential only; other 4xx as the vendor being up), then
    retried after the vendor's `Retry-After` or a jittered backoff when the error is
    retryable and the retry is safe (the call is idempotent, nothing was sent, or a
    429), within the policy's attempts and budget; otherwise the call's failure is
    reported (metrics, health stats, `on_failure` hooks) and the error raised.

    After a successful try the slot stays held until the block ends, so a stream holds
    it while it is read. A failure seen after the try (mid-stream) goes to `fail(exc)`,
    which records it at once and returns the `ProviderError` to raise. Leaving the
    block without an exception, or by cancellation (the consumer left; the vendor was
    fine), records the success: breakers, latency and success metrics. An exception
    the block raises that was not passed to `fail()` is the caller's own: the slot is
    released and nothing is recorded.
    """

    def __init__(
        self,
        http: ProviderHTTP,
        operation: str,
        *,
        credential: str | None,
        idempotent: bool,
        classify: Classifier | None,
        slot: asyncio.Semaphore | None,
        queue_timeout: float | None,
        labels: Mapping[str, str] | None,
        own_credential: bool = False,
    ) -> None:
        self.http = http
        self.operation = operation
        self.idempotent = idempotent
        self.fingerprint = _cached_fingerprint(credential) if credential else None
        self.attempts = 0
        self.started = time.perf_counter()
        self._classify = classify
        self._cred_name = (
            f"{http.name}:cred:{self.fingerprint}" if self.fingerprint is not None else None
        )
        self._slot = slot
        self._queue_timeout = queue_timeout
        self._labels = labels
        self._shared = not (own_credential and credential)
        self._admission: tuple[bool, bool] | None = None  # held from a successful try
        self._held: asyncio.Semaphore | None = None
        self._finished = False  # the outcome is recorded

    async def __aenter__(self) -> Self:
        self.started = time.perf_counter()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        admission, self._admission = self._admission, None
        self._release_slot()
        if admission is None or self._finished:
            return
        self._finished = True
        if exc_type is not None and issubclass(exc_type, Exception):
            return  # the caller's own failure, not the vendor's
        # Completed, or the consumer left (cancellation): the vendor was fine.
        await asyncio.shield(
            self.http._breaker_success(admission, self._cred_name, provider_ok=self._shared)
        )
        self._record_success()

    def classify(self, exc: BaseException) -> ProviderError:
        """What the SDK raised, as this provider's `ProviderError`."""
        if self._classify is None:
            return classify_unexpected(self.http.name, exc, self.operation)
        return self._classify(exc, self.operation)

    async def attempt(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` (one SDK call) under the guard, retried as the policy allows."""
        if self._admission is not None or self._finished:
            raise RuntimeError("CallGuard.attempt() runs once per guarded call")
        policy = self.http.config.retry
        while True:
            self.attempts += 1
            try:
                admission = await self._admit()
            except ProviderError as refused:
                await self._report(refused)
                raise
            try:
                result = await fn()
            except BaseException as exc:
                self._release_slot()
                if not isinstance(exc, Exception):
                    raise  # cancelled: the vendor's answer is unknown, nothing recorded
                unsafe = refusal_in(exc)
                if unsafe is not None:
                    # The outbound guard refused the address: nobody was called.
                    await self.http._release_probe(admission, self._cred_name)
                    self._finished = True
                    raise unsafe from None
                error = self.classify(exc)
                await self._record_failure(admission, error)
                wait = self._retry_wait(error, policy)
                if wait is None:
                    await self._report(error)
                    raise error from None
                await asyncio.sleep(wait)
                continue
            self._admission = admission
            return result

    async def fail(self, exc: BaseException) -> ProviderError:
        """Record a failure seen after a successful `attempt()` (e.g. mid-stream) and
        return the `ProviderError` to raise. The slot is held until the block ends;
        later failures and the block's end record nothing more."""
        error = self.classify(exc)
        admission, self._admission = self._admission, None
        if not self._finished:
            self._finished = True
            if admission is not None:
                await self._record_failure(admission, error)
            await self._report(error)
        return error

    # Internals --------------------------------------------------------------------

    async def _admit(self) -> tuple[bool, bool]:
        """Rate budget, breakers and a concurrency slot for one try (in that order)."""
        http = self.http
        if http.config.rate_limit and http.limiter is not None:
            try:
                await http._take_budget(self.operation, self.fingerprint)
            except _Failure as failure:
                raise failure.error from None
        admission = await http._admit(self.operation, self._cred_name, self._shared)
        slot = self._slot if self._slot is not None else http._semaphore
        timeout = (
            self._queue_timeout if self._queue_timeout is not None else http.config.timeouts.total
        )
        try:
            await asyncio.wait_for(slot.acquire(), timeout)
        except TimeoutError:
            await http._release_probe(admission, self._cred_name)
            raise ProviderError(
                http.name, self.operation, vendor_code="local_concurrency",
                message="too many requests in flight for this key"
                if self._slot is not None
                else "too many calls in flight to this provider",
                retryable=True, retry_after=1.0,
            ) from None  # fmt: skip
        self._held = slot
        return admission

    def _release_slot(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    async def _record_failure(self, admission: tuple[bool, bool], error: ProviderError) -> None:
        """The breakers' view of a failed try, as `request()` records an HTTP answer."""
        http = self.http
        status, shared = error.status, self._shared
        if status is None or status >= 500 or status == 408:
            await http._breaker_failure(admission, self._cred_name, shared)
        elif error.is_auth_error and self._cred_name is not None:
            # The vendor is up (it answered); this key is refused.
            await http._breaker_success(admission, None, provider_ok=shared)
            await http._credential_failure(self._cred_name, admission[1])
        else:
            await http._breaker_success(admission, self._cred_name, provider_ok=shared)

    def _retry_wait(self, error: ProviderError, policy: RetryPolicy) -> float | None:
        """Seconds before the next try, or None when this error ends the call."""
        if not error.retryable or self.attempts >= policy.max_attempts:
            return None
        nothing_sent = error.vendor_code in _NOTHING_SENT
        if not (self.idempotent or nothing_sent or error.status == 429):
            return None
        wait = error.retry_after if error.retry_after is not None else policy.backoff(self.attempts)
        if wait > policy.max_retry_after:
            return None
        if time.perf_counter() - self.started + wait > policy.budget:
            return None
        return float(wait)

    async def _report(self, error: ProviderError) -> None:
        self._finished = True
        await self.http._failed(
            error, self.operation, self.started, self.attempts, self.fingerprint, self._labels
        )

    def _record_success(self) -> None:
        http = self.http
        elapsed = time.perf_counter() - self.started
        http._count(self.operation, "success", elapsed)
        stats = http.stats
        stats.calls += 1
        stats.last_latency = elapsed
        stats.last_success_at = time.time()
