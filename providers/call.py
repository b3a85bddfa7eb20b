"""One logical call to a provider: the one retry loop, for plain HTTP and SDK calls alike.

`ProviderHTTP.request()` (aiohttp) and `ProviderHTTP.guard()` (around a vendor SDK's
call) both build a `Call` and hand it the attempt to make (`request()` makes a first try
that `Gate.take_now` admitted itself, and builds the `Call` only when that try needs more
than its books kept: `took_first_try`, then `failed_try` or `tried_well`):

    call = http.guard("chat.completions", credential=key, idempotent=False,
                      classify=to_provider_error)
    completion = await call.run(lambda: client.chat.completions.create(...))

`attempt(fn)` makes the call, in as many tries as the retry policy allows. Before each
try the provider's `Gate` (providers/admission.py) takes one unit of the rate budget,
asks the breakers and takes a concurrency slot. A try that raises is classified into a
`ProviderError`, recorded on the breakers, and tried again after the vendor's
`Retry-After` or a jittered backoff when the error is retryable, the retry is safe
(`providers.retry.retry_safe`: idempotent, nothing sent, or a 429) and the policy allows
it (`RetryPolicy.next_wait`); otherwise the failure is reported (metrics, health
statistics, `on_failure` hooks) and the error raised. The gate's own refusals end the
call at once (an open breaker always; a spent rate budget or no free slot unless the
call was built with `retry_refusals`, as `request()` builds it: a background send may
wait the refusal out, an SDK caller — a person waiting on a completion — does not).

After a successful try the slot stays held until the call is finished, so a stream
holds it while it is read. `run(fn)` finishes at once; `async with call:` finishes when
the block ends: without an exception, or by cancellation (the consumer left; the vendor
was fine), that records the success. A failure seen after the try (mid-stream) goes to
`fail(exc)`, which records it at once and returns the `ProviderError` to raise. An
exception the block raises that was not passed to `fail()`, or one `classify` does not
claim (returns None for), is the caller's own: the slot and probe slots go back and
nothing is recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self, TypeVar

from kit.ssrf import refusal_in
from providers.admission import Gate, Ticket
from providers.errors import CircuitOpen, ProviderError
from providers.retry import retry_safe

T = TypeVar("T")
CLEAR: Ticket = (False, False)  # admitted without a probe slot of either breaker
# What a failed try raised -> the provider's error, or None when it is the caller's own.
Classifier = Callable[[BaseException, str], ProviderError | None]


def classify_unexpected(provider: str, exc: BaseException, operation: str) -> ProviderError:
    """The default classification of an SDK's failure: a ProviderError stays as it is;
    anything else is an unexpected client failure (not retried, counted against the
    vendor's breaker as an unknown outcome)."""
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(
        provider, operation, vendor_code="client_error",
        message=f"unexpected {type(exc).__name__} from the client", retryable=False,
    )  # fmt: skip


class Call:
    """One logical call through a provider's gate (see the module docstring)."""

    __slots__ = (
        "_classify",
        "_finished",
        "_held",
        "_labels",
        "_queue_timeout",
        "_slot",
        "_ticket",
        "attempts",
        "cred_name",
        "fingerprint",
        "gate",
        "idempotent",
        "operation",
        "retry_refusals",
        "shared",
        "started",
    )

    def __init__(
        self,
        gate: Gate,
        operation: str,
        *,
        credential: str | None,
        idempotent: bool,
        classify: Classifier | None = None,
        slot: asyncio.Semaphore | None = None,
        queue_timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        own_credential: bool = False,
        retry_refusals: bool = False,
    ) -> None:
        self.gate = gate
        self.operation = operation
        self.idempotent = idempotent
        self.retry_refusals = retry_refusals
        self.fingerprint: str | None = None
        self.cred_name: str | None = None
        if credential:
            self.fingerprint, self.cred_name = gate.identify(credential)
        # A tenant's or user's own credential never asks nor feeds the provider's breaker.
        self.shared = not (own_credential and credential)
        self.attempts = 0
        self.started = time.perf_counter()
        self._classify = classify
        self._slot = slot
        self._queue_timeout = queue_timeout
        self._labels = labels
        self._ticket: Ticket | None = None  # held from a successful try until finished
        self._held: asyncio.Semaphore | None = None
        self._finished = False  # the outcome is recorded

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def classify(self, exc: BaseException) -> ProviderError | None:
        """What a try raised, as this provider's `ProviderError` (None: the caller's own)."""
        if self._classify is None:
            return classify_unexpected(self.gate.name, exc, self.operation)
        return self._classify(exc, self.operation)

    # The loop ---------------------------------------------------------------------

    async def attempt(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` (one try of the call) through the gate, retried as the policy allows.
        On success the slot stays held until `finish()` (or the block's end)."""
        if self._ticket is not None or self._finished:
            raise RuntimeError("Call.attempt() runs once per call")
        gate = self.gate
        while True:
            self.attempts += 1
            if self.attempts > 1:
                gate.retried(self.operation)
            ticket = self._admit_now()
            if ticket is None:
                try:
                    ticket = await self._admit()
                except ProviderError as refused:
                    if isinstance(refused, CircuitOpen) or not self.retry_refusals:
                        await self._report(refused)
                        raise
                    await self._wait_or_raise(refused)
                    continue
            try:
                result = await fn()
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    self._release_slot()
                    raise  # cancelled: the vendor's answer is unknown, nothing recorded
                await self.failed_try(ticket, exc)
                continue
            self._ticket = ticket
            return result

    def took_first_try(self, started: float) -> None:
        """The caller made the first try itself, admitted by `Gate.take_now` (so it holds
        one of the provider's slots and no probe slot) at `started`: this call goes on
        from there — `failed_try` then `attempt()`, or `tried_well` then `finish()`."""
        self.attempts = 1
        self.started = started
        self._held = self.gate.slots

    def tried_well(self, ticket: Ticket) -> None:
        """The try admitted with `ticket` succeeded (as `attempt()` returning)."""
        self._ticket = ticket

    async def failed_try(self, ticket: Ticket, exc: Exception) -> None:
        """A try raised `exc`: recorded, then this returns after the wait before the
        next try, or raises the call's error (or `exc` itself, when it is the caller's
        own or the outbound guard's refusal)."""
        self._release_slot()
        unsafe = refusal_in(exc)
        error = None if unsafe is not None else self.classify(exc)
        if error is None:
            # The outbound guard refused the address, or the caller's own bug:
            # nobody was called, so no breaker learns anything.
            await self.gate.release(ticket, self.cred_name)
            self._finished = True
            if unsafe is not None:
                raise unsafe from None
            raise exc
        await self.gate.record(ticket, self.cred_name, self.shared, error)
        await self._wait_or_raise(error)

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`attempt(fn)`, then the call is finished: the answer was read in full."""
        result = await self.attempt(fn)
        if not self.finish_now():
            await self.finish()
        return result

    def finish_now(self) -> bool:
        """`finish()` without a coroutine when it has nothing to tell the breakers (no
        probe slot held, every breaker clear): only the books are kept. False: await
        `finish()`."""
        ticket = self._ticket
        if ticket is None or ticket[0] or ticket[1] or self._finished:
            return False
        gate = self.gate
        if not (gate.breakers.all_clear or gate.clear(self.cred_name, self.shared)):
            return False
        self._ticket = None
        held, self._held = self._held, None
        if held is not None:
            held.release()
        self._finished = True
        gate.succeeded(self.operation, time.perf_counter() - self.started)
        return True

    async def finish(self) -> None:
        """The vendor answered well (or the consumer left): record the success."""
        ticket, self._ticket = self._ticket, None
        self._release_slot()
        if ticket is None or self._finished:
            return
        self._finished = True
        await self.gate.vendor_up(ticket, self.cred_name, self.shared)
        self.gate.succeeded(self.operation, self.elapsed())

    async def fail(self, exc: BaseException) -> ProviderError:
        """Record a failure seen after a successful `attempt()` (e.g. mid-stream) and
        return the `ProviderError` to raise. The slot is held until the block ends;
        later failures and the block's end record nothing more."""
        error = self.classify(exc) or classify_unexpected(self.gate.name, exc, self.operation)
        ticket, self._ticket = self._ticket, None
        if not self._finished:
            self._finished = True
            if ticket is not None:
                await self.gate.record(ticket, self.cred_name, self.shared, error)
            await self._report(error)
        return error

    async def __aenter__(self) -> Self:
        self.started = time.perf_counter()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if (
            self._ticket is None
            or self._finished
            or (exc_type is not None and issubclass(exc_type, Exception))
        ):
            # Nothing held, already recorded, or the caller's own failure (not the
            # vendor's): nothing more is recorded.
            self._ticket = None
            self._release_slot()
            return
        # Completed, or the consumer left (cancellation): the vendor was fine.
        await asyncio.shield(self.finish())

    # Internals --------------------------------------------------------------------

    def _admit_now(self) -> Ticket | None:
        """The common case of `_admit` without a coroutine (`Gate.take_now`), for calls
        queueing on the provider's own slots. None: take the awaited path (which checks
        everything again)."""
        gate = self.gate
        if self._slot is not None or not gate.take_now(
            self.fingerprint, self.cred_name, self.shared
        ):
            return None
        self._held = gate.slots
        return CLEAR

    async def _admit(self) -> Ticket:
        """Rate budget, breakers and a concurrency slot for one try (in that order)."""
        gate = self.gate
        if gate.config.rate_limit:
            await gate.take_budget(self.operation, self.fingerprint)
        ticket = await gate.admit(self.operation, self.cred_name, self.shared)
        slot = self._slot if self._slot is not None else gate.slots
        if slot.locked():  # queue for a slot, but not for ever
            wait = self._queue_timeout
            if wait is None:
                wait = gate.config.timeouts.total
            if self.attempts > 1:  # never queue past the call's budget
                wait = min(wait, max(0.05, gate.config.retry.budget - self.elapsed()))
            try:
                await gate.acquire(slot, wait, self.operation, own_slot=self._slot is not None)
            except ProviderError:
                await gate.release(ticket, self.cred_name)
                raise
        else:
            await slot.acquire()
        self._held = slot
        return ticket

    async def _wait_or_raise(self, error: ProviderError) -> None:
        """Sleep before the next try, or report the call's failure and raise `error`."""
        wait = None
        if error.retryable and retry_safe(self.idempotent, error.status, error.vendor_code):
            wait = self.gate.config.retry.next_wait(
                self.attempts, self.elapsed(), error.retry_after
            )
        if wait is None:
            await self._report(error)
            raise error from None
        await asyncio.sleep(wait)

    def _release_slot(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    async def _report(self, error: ProviderError) -> None:
        self._finished = True
        await self.gate.failed(
            error, self.operation, self.elapsed(), self.attempts, self.fingerprint, self._labels
        )
