"""One provider's admission path and books: what a call to it passes before each attempt,
and what is written down after.

Both ways of calling a vendor — plain HTTP (`ProviderHTTP.request`) and a vendor SDK
(`ProviderHTTP.guard`) — run one `providers.call.Call`, which asks this provider's
`Gate`, in this order, before every attempt:

1. `take_budget`: one unit of the outbound rate budget for the credential (kit.ratelimit
   storage, shared through Redis when configured); over budget it waits when the window
   frees soon, else raises a retryable `RateLimitedLocally`;
2. `admit`: the credential's breaker, then the provider's. The provider's breaker is
   about the shared credentials (system key, sandbox) only: a tenant's or user's own
   credential asks and feeds its own breaker alone, so one tenant's dead endpoint never
   opens the provider for everyone. Refused: `CircuitOpen`;
3. `acquire`: a concurrency slot (the provider's, or one the caller brings, e.g. per
   key), queued for at most a given time. Refused: `ProviderError("local_concurrency")`.

After an attempt `record` gives the breakers its outcome (5xx, 408 and failures without
a status count against the provider — or against an own credential; 401/403 against the
credential only; other answers say the vendor is up), `release` hands unused probe slots
back when nobody was called, and `succeeded` / `failed` / `retried` keep the metrics, the
health statistics and call the `on_failure` hooks. Keeping all of it here is what makes
the HTTP and the SDK paths one path.

The common case skips the awaited steps: `take_now` admits a try synchronously when every
breaker the call asks is clear (nothing on record: nothing to ask, nothing to tell —
`BreakerStore.clear`), one of the provider's slots is free and a unit of the budget is
at hand in the credential's lease; `done_now` closes a try so admitted that was answered
well while the breakers are still clear. Anything else takes the steps above. This is
what `bench_provider_overhead.py` measures.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from kit import metrics
from kit.ratelimit import RateLimiter, parse_limit
from providers.breaker import STATE_GAUGE, Admission, BreakerState, BreakerStore
from providers.errors import CircuitOpen, FailureEvent, ProviderError, RateLimitedLocally

if TYPE_CHECKING:
    from providers.http import ProviderConfig

log = logging.getLogger("switchboard.providers")

FailureHook = Callable[[FailureEvent], Awaitable[None] | None]
Ticket = tuple[bool, bool]  # an admitted attempt: (provider probe slot, credential probe slot)

MAX_MESSAGE = 500
RECENT_WINDOW = 300.0  # seconds of failures the health snapshot counts
_ADMIT_NONE = Admission(True)


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


def cached_fingerprint(credential: str) -> str:
    """`fingerprint`, remembered: a hash per call is measurable on the hot path."""
    fp = _FINGERPRINTS.get(credential)
    if fp is None:
        if len(_FINGERPRINTS) >= 4096:
            _FINGERPRINTS.clear()
        fp = _FINGERPRINTS[credential] = fingerprint(credential)
    return fp


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


class Slots(asyncio.Semaphore):
    """The provider's calls in flight: an asyncio semaphore that can also be taken
    without a coroutine when one is free and nobody queues (the common case)."""

    def release(self) -> None:
        if self._waiters:
            super().release()  # hands the slot to the next in the queue
        else:
            self._value += 1

    def try_acquire(self) -> bool:
        # Stricter than acquire()'s own check (a cancelled waiter counts as a queue):
        # when this says no, the caller queues through acquire(), which sorts it out.
        if self._value > 0 and not self._waiters:
            self._value -= 1
            return True
        return False


class Gate:
    """The admission path and the books of one provider (see the module docstring)."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        breakers: BreakerStore,
        limiter: RateLimiter | None,
        hooks: list[FailureHook],
        stats: ProviderStats,
    ) -> None:
        self.config = config
        self.name = config.name
        self.breakers = breakers
        self.limiter = limiter
        self._limited = bool(config.rate_limit) and limiter is not None  # both fixed
        self.hooks = hooks
        self.stats = stats
        self.slots = Slots(config.concurrency)  # the provider's calls in flight
        self._window: SlidingWindowCounterRateLimiter | MovingWindowRateLimiter | None = None
        self._leases: dict[str, list[Any]] = {}  # credential -> [units left, valid until]
        self._lease_locks: dict[str, asyncio.Lock] = {}
        self._cred_names: dict[str, str] = {}
        self._identities: dict[str, tuple[str, str]] = {}
        self._tallies: dict[tuple[str, str], metrics.OutboundTally] = {}
        self._success_tallies: dict[str, metrics.OutboundTally] = {}
        self._gauge = metrics.breaker_state.labels(self.name)
        self._gauge.set(0)

    def identify(self, credential: str) -> tuple[str, str]:
        """(fingerprint, breaker name) of a credential, remembered per gate (one dict
        lookup on the hot path instead of a hash)."""
        known = self._identities.get(credential)
        if known is None:
            if len(self._identities) >= 4096:
                self._identities.clear()
            fp = cached_fingerprint(credential)
            known = self._identities[credential] = (fp, self.credential_name(fp))
        return known

    def credential_name(self, fp: str) -> str:
        """The breaker name of one credential (by fingerprint)."""
        name = self._cred_names.get(fp)
        if name is None:
            name = self._cred_names[fp] = f"{self.name}:cred:{fp}"
        return name

    # Rate budget ------------------------------------------------------------------

    def budget_now(self, fp: str | None) -> bool:
        """One unit of the outbound budget when it can be had without waiting or asking
        the store: no limit configured, or a unit left in the credential's lease.
        False: `take_budget` must be awaited."""
        if not self._limited:
            return True
        lease = self._leases.get(fp or "-")
        if lease is not None and lease[0] > 0 and time.monotonic() < lease[1]:
            lease[0] -= 1
            return True
        return False

    async def take_budget(self, operation: str, fp: str | None) -> None:
        """One unit of the provider's outbound budget for this credential.

        Small budgets (under 200 per window, e.g. Resend's 2/second) are taken one
        unit at a time from an exact moving window. Larger ones are drawn from a
        sliding-window counter in leases of 1% (valid for a tenth of the window), so
        a busy process asks the store once per lease instead of once per call. A
        lease's units are counted when taken, so unused ones only under-use the
        budget; the counter's approximation and the leases can overshoot by a few
        percent at most, which matters little at those volumes.
        """
        spec = self.config.rate_limit
        if not spec or self.limiter is None:
            return
        key = fp or "-"
        lease = self._leases.get(key)
        if lease is not None and lease[0] > 0 and time.monotonic() < lease[1]:
            lease[0] -= 1
            return
        item = parse_limit(spec)
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
                raise RateLimitedLocally(self.name, operation, retry_after=wait)
            await asyncio.sleep(wait)

    # Breakers ---------------------------------------------------------------------

    def take_now(self, fp: str | None, cred_name: str | None, shared: bool) -> bool:
        """Admit a try at once when nothing needs waiting for or asking: the breakers
        clear, one of the provider's slots free (taken: the caller gives it back), a
        unit of the budget at hand. False: admit it the awaited way (`providers.call`)."""
        if not (self.breakers.all_clear or self.clear(cred_name, shared)):
            return False
        slots = self.slots
        if not slots.try_acquire():
            return False
        if not self.budget_now(fp):
            slots.release()
            return False
        return True

    def done_now(self, operation: str, elapsed: float, cred_name: str | None, shared: bool) -> bool:
        """A try admitted by `take_now` was answered well: when the breakers have nothing
        to hear (still clear), its slot goes back and the books are kept. False: the
        success must be recorded the awaited way (`Call.finish`)."""
        if not (self.breakers.all_clear or self.clear(cred_name, shared)):
            return False
        self.slots.release()
        self.succeeded(operation, elapsed)
        return True

    def clear(self, cred_name: str | None, shared: bool) -> bool:
        """Every breaker the call asks is known closed with no failure on record, so
        admitting it and recording its success would change nothing (see
        `BreakerStore.clear`)."""
        breakers = self.breakers
        if breakers.all_clear:
            return True
        clear = breakers.clear
        return (cred_name is None or clear(cred_name)) and (not shared or clear(self.name))

    async def admit(self, operation: str, cred_name: str | None, shared: bool) -> Ticket:
        """Ask the credential's breaker, then the provider's (`shared` calls only).

        The credential goes first so that a refused key never takes the provider's
        single half-open probe slot."""
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

    async def release(self, ticket: Ticket, cred_name: str | None) -> None:
        """Nobody was called (refused address, no slot): the probe slots go back."""
        if ticket[0]:
            await self.breakers.failure(self.name, self.config.breaker, probe=True)
        if ticket[1] and cred_name is not None:
            await self.breakers.failure(cred_name, self.config.breaker, probe=True)

    async def record(
        self, ticket: Ticket, cred_name: str | None, shared: bool, error: ProviderError | None
    ) -> None:
        """The breakers' view of an attempt that got this far: `error` None when the
        vendor answered well (or the caller's consumer left), else what it raised."""
        status = None if error is None else error.status
        if error is not None and (status is None or status >= 500 or status == 408):
            await self._vendor_failed(ticket, cred_name, shared)
        elif error is not None and error.is_auth_error and cred_name is not None:
            # The vendor is up (it answered); this key is refused.
            await self.vendor_up(ticket, None, shared)
            await self._credential_failed(cred_name, ticket[1])
        else:
            await self.vendor_up(ticket, cred_name, shared)

    async def vendor_up(self, ticket: Ticket, cred_name: str | None, shared: bool) -> None:
        """The vendor answered (well, or refusing the caller's data): it is up."""
        policy = self.config.breaker
        if shared:
            state = await self.breakers.success(self.name, policy, ticket[0])
            if ticket[0] or state is not BreakerState.CLOSED:
                self._gauge.set(STATE_GAUGE[state])
        if cred_name is not None:
            await self.breakers.success(cred_name, policy, ticket[1])

    async def _vendor_failed(self, ticket: Ticket, cred_name: str | None, shared: bool) -> None:
        policy = self.config.breaker
        if not shared and cred_name is not None:
            # A tenant's own credential or base URL failed: that credential's breaker
            # counts it, the provider's (the shared credentials') never does.
            await self._credential_failed(cred_name, ticket[1])
            return
        state = await self.breakers.failure(self.name, policy, ticket[0])
        self._gauge.set(STATE_GAUGE[state])
        if state is BreakerState.OPEN:
            log.warning("breaker open", extra={"provider": self.name})
        if cred_name is not None and ticket[1]:
            # The vendor failed, which says nothing about the key: the key's probe
            # slot is handed back (its breaker re-opens for one more cool-down).
            await self.breakers.failure(cred_name, policy, probe=True)

    async def _credential_failed(self, cred_name: str, probe: bool = False) -> None:
        state = await self.breakers.failure(cred_name, self.config.breaker, probe=probe)
        if state is BreakerState.OPEN:
            log.warning("credential breaker open", extra={"provider": self.name})

    async def breaker_state(self, name: str | None = None) -> tuple[BreakerState, int]:
        """The provider's breaker, or the one named `name` (a credential's)."""
        state, failures = await self.breakers.state(name or self.name)
        if name is None:
            self._gauge.set(STATE_GAUGE[state])
        return state, failures

    # Concurrency ------------------------------------------------------------------

    async def acquire(
        self, slot: asyncio.Semaphore, wait: float | None, operation: str, *, own_slot: bool
    ) -> None:
        """A concurrency slot, queued for at most `wait` seconds."""
        try:
            await asyncio.wait_for(slot.acquire(), wait)
        except TimeoutError:
            raise ProviderError(
                self.name, operation, vendor_code="local_concurrency",
                message="too many requests in flight for this key"
                if own_slot
                else "too many calls in flight to this provider",
                retryable=True, retry_after=1.0,
            ) from None  # fmt: skip

    # Books ------------------------------------------------------------------------

    def count(self, operation: str, outcome: str, elapsed: float) -> None:
        key = (operation, outcome)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = metrics.outbound_calls.tally(self.name, operation, outcome)
        tally.observe(elapsed)

    def retried(self, operation: str) -> None:
        metrics.outbound_retries.labels(self.name, operation).inc()

    def succeeded(self, operation: str, elapsed: float) -> None:
        tally = self._success_tallies.get(operation)  # keyed by the name alone: no tuple
        if tally is None:
            tally = self._success_tallies[operation] = metrics.outbound_calls.tally(
                self.name, operation, "success"
            )
        tally.observe(elapsed)
        stats = self.stats
        stats.calls += 1
        stats.last_latency = elapsed
        stats.last_success_at = time.time()

    async def failed(
        self,
        error: ProviderError,
        operation: str,
        elapsed: float,
        attempts: int,
        fp: str | None,
        labels: Mapping[str, str] | None,
    ) -> None:
        """A call finally failed: metrics, health statistics, then every hook."""
        outcome = "circuit_open" if isinstance(error, CircuitOpen) else "failure"
        self.count(operation, outcome, elapsed)
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
