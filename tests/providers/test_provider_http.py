"""The shared outbound layer (providers/http.py) against the Resend sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate

import httpx
import pytest
from prometheus_client.utils import floatToGoString

from kit import metrics
from kit.errors import BadUserInput, UpstreamUnavailable
from kit.ratelimit import RateLimiter
from providers.admission import Slots
from providers.breaker import BreakerPolicy
from providers.errors import FailureEvent, ProviderError, RateLimitedLocally
from providers.http import ProviderConfig, ProviderHTTP, Timeouts
from providers.registry import ProviderRegistry
from providers.resend import ResendClient
from providers.retry import RetryPolicy, parse_retry_after
from providers.sandbox.resend import ResendSandbox
from resolvers.upstream import to_gateway_error
from tests.conftest import eventually, running_server

KEY = "re_test_key_0001"
EMAIL = {"sender": "Acme <hello@acme.test>", "to": "ada@example.com", "subject": "Hi", "text": "x"}
FAST_RETRY = RetryPolicy(max_attempts=4, base=0.05, cap=0.2, budget=10.0)


@dataclass
class Rig:
    sandbox: ResendSandbox
    url: str
    control: httpx.AsyncClient

    async def fault(self, **fault: object) -> None:
        r = await self.control.post("/_sandbox/faults", json=fault)
        assert r.status_code == 201, r.text

    async def recorded(self) -> list[dict]:
        return (await self.control.get("/_sandbox/requests")).json()["requests"]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sandbox = ResendSandbox()
    async with running_server(sandbox) as url, httpx.AsyncClient(base_url=url) as control:
        yield Rig(sandbox, url, control)


def layer(**overrides: object) -> ProviderHTTP:
    overrides.setdefault("retry", FAST_RETRY)
    config = ProviderConfig(name="resend", **overrides)  # type: ignore[arg-type]
    return ProviderHTTP(config, limiter=RateLimiter())


@pytest.fixture
async def http() -> AsyncIterator[ProviderHTTP]:
    client = layer()
    yield client
    await client.aclose()


def resend(http: ProviderHTTP, rig: Rig, key: str = KEY) -> ResendClient:
    return ResendClient(http, key, base_url=rig.url, labels={"tenant": "7"})


# Retries ------------------------------------------------------------------------------


async def test_send_and_get_through_the_layer(http: ProviderHTTP, rig: Rig) -> None:
    client = resend(http, rig)
    sent = await client.send_email(**EMAIL, idempotency_key="k-1")
    email = await client.get_email(sent.id)
    assert email.id == sent.id and email.to == ["ada@example.com"]
    assert email.last_event == "delivered"
    recorded = await rig.recorded()
    assert recorded[0]["headers"]["idempotency-key"] == "k-1"
    assert recorded[0]["headers"]["user-agent"].startswith("switchboard/")
    assert http.stats.calls == 2 and http.stats.last_latency is not None


async def test_429_with_retry_after_is_retried_after_that_wait(
    http: ProviderHTTP, rig: Rig
) -> None:
    await rig.fault(status=429, count=1, retry_after=1)
    sent = await resend(http, rig).send_email(**EMAIL, idempotency_key="k-429")
    recorded = await rig.recorded()
    assert [r["status"] for r in recorded] == [429, 200]
    assert recorded[1]["at"] - recorded[0]["at"] >= 0.9  # Retry-After: 1 was honoured
    assert rig.sandbox.emails and sent.id in {k[1] for k in rig.sandbox.emails}


async def test_503_with_http_date_retry_after_is_retried(http: ProviderHTTP, rig: Rig) -> None:
    sent = await resend(http, rig).send_email(**EMAIL, idempotency_key="k-date")
    await rig.control.delete("/_sandbox/requests")
    await rig.fault(status=503, count=2)
    email = await resend(http, rig).get_email(sent.id)  # GET: idempotent
    assert email.id == sent.id
    assert [r["status"] for r in await rig.recorded()] == [503, 503, 200]


async def test_retries_stop_at_max_attempts_and_report_once(rig: Rig) -> None:
    events: list[FailureEvent] = []
    http = ProviderHTTP(
        ProviderConfig(name="resend", retry=FAST_RETRY, breaker=BreakerPolicy(threshold=100)),
        hooks=[events.append],
    )
    try:
        await rig.fault(status=502, count=-1)
        with pytest.raises(ProviderError) as info:
            await resend(http, rig).send_email(**EMAIL, idempotency_key="k-502")
    finally:
        await http.aclose()
    err = info.value
    assert err.status == 502 and err.retryable and err.provider == "resend"
    assert err.operation == "send_email" and err.vendor_code == "internal_server_error"
    assert len(await rig.recorded()) == FAST_RETRY.max_attempts
    assert len(events) == 1
    event = events[0]
    assert event.attempts == FAST_RETRY.max_attempts and event.status == 502
    assert event.labels == {"tenant": "7"} and event.credential_fingerprint
    assert KEY not in repr(event)
    gw = to_gateway_error(err)
    assert isinstance(gw, UpstreamUnavailable)
    assert gw.as_extensions()["code"] == "UPSTREAM_UNAVAILABLE"
    assert gw.as_extensions()["provider"] == "resend"


async def test_retry_after_beyond_the_budget_is_not_waited_for(rig: Rig) -> None:
    http = layer()
    try:
        await rig.fault(status=429, count=1, retry_after=3600)
        with pytest.raises(ProviderError) as info:
            await resend(http, rig).send_email(**EMAIL, idempotency_key="k-long")
    finally:
        await http.aclose()
    assert info.value.status == 429 and info.value.retry_after == pytest.approx(3600, abs=1)
    assert len(await rig.recorded()) == 1
    gw = to_gateway_error(info.value)
    assert isinstance(gw, UpstreamUnavailable) and gw.extensions["retryAfter"] == 3600


async def test_caller_errors_are_not_retried_and_map_to_bad_input(
    http: ProviderHTTP, rig: Rig
) -> None:
    with pytest.raises(ProviderError) as info:
        await resend(http, rig).send_email(**{**EMAIL, "sender": "nobody"}, idempotency_key="k-bad")
    err = info.value
    assert err.status == 422 and err.vendor_code == "invalid_from_address"
    assert err.is_caller_error and not err.retryable
    assert len(await rig.recorded()) == 1
    gw = to_gateway_error(err, field="sender")
    assert isinstance(gw, BadUserInput)
    assert gw.as_extensions()["code"] == "BAD_USER_INPUT"
    assert "from" in gw.details["sender"]
    state, failures = await http.breaker_state()
    assert state == "closed" and failures == 0


async def test_post_without_idempotency_key_is_not_retried_on_5xx(
    http: ProviderHTTP, rig: Rig
) -> None:
    await rig.fault(status=503, count=1)
    with pytest.raises(ProviderError) as info:
        await resend(http, rig).send_email(**EMAIL, idempotency_key=None)
    assert info.value.status == 503
    assert len(await rig.recorded()) == 1


# Timeouts and cut connections ---------------------------------------------------------


async def test_a_stalled_upstream_never_holds_a_call_past_its_timeouts(rig: Rig) -> None:
    http = layer(
        timeouts=Timeouts(connect=1, read=0.3, total=1),
        retry=RetryPolicy(max_attempts=10, base=0.05, cap=0.1, budget=1.5),
        breaker=BreakerPolicy(threshold=100),
    )
    await rig.fault(latency_ms=20_000, count=-1)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError) as info:
            await resend(http, rig).get_email(str(uuid.uuid4()))
    finally:
        await http.aclose()
    # Contract, not performance: the vendor stalls 20 s per request; the call's
    # total retry budget is 1.5 s, and it gave up within it (plus one read timeout).
    assert time.monotonic() - started < 5
    assert info.value.vendor_code == "timeout" and info.value.retryable
    recorded = await rig.recorded()
    assert len(recorded) >= 2  # GET is idempotent: timeouts were retried
    assert isinstance(to_gateway_error(info.value), UpstreamUnavailable)


async def test_cut_connection_not_retried_without_idempotency_key(
    http: ProviderHTTP, rig: Rig
) -> None:
    await rig.fault(cut=True, count=1)
    with pytest.raises(ProviderError) as info:
        await resend(http, rig).send_email(**EMAIL, idempotency_key=None)
    assert info.value.vendor_code == "connection_lost"
    assert len(await rig.recorded()) == 1  # one attempt: a retry could send twice
    assert rig.sandbox.emails == {}


async def test_cut_connection_retried_with_idempotency_key(http: ProviderHTTP, rig: Rig) -> None:
    await rig.fault(cut=True, count=1)
    sent = await resend(http, rig).send_email(**EMAIL, idempotency_key="k-cut")
    recorded = await rig.recorded()
    assert len(recorded) == 2 and recorded[0]["fault"] == {"cut": True}
    assert [k[1] for k in rig.sandbox.emails] == [sent.id]


async def test_cut_connection_retried_for_get(http: ProviderHTTP, rig: Rig) -> None:
    sent = await resend(http, rig).send_email(**EMAIL, idempotency_key="k-get")
    await rig.fault(cut=True, count=2)
    assert (await resend(http, rig).get_email(sent.id)).id == sent.id
    assert len(await rig.recorded()) == 4


async def test_connection_refused_is_retried_then_reported(unused_port: int) -> None:
    http = layer(breaker=BreakerPolicy(threshold=100))
    client = ResendClient(http, KEY, base_url=f"http://127.0.0.1:{unused_port}")
    try:
        with pytest.raises(ProviderError) as info:
            await client.send_email(**EMAIL, idempotency_key=None)  # nothing was sent: safe
    finally:
        await http.aclose()
    assert info.value.vendor_code == "connect_failed"
    assert http.stats.failures == 1


@pytest.fixture
def unused_port() -> int:
    from tests.conftest import free_port

    return free_port()


# Pool and concurrency ---------------------------------------------------------------


async def test_500_concurrent_calls_stay_within_pool_and_cap(rig: Rig) -> None:
    http = layer(pool_size=8, concurrency=8, timeouts=Timeouts(connect=5, read=10, total=30))
    client = resend(http, rig)
    await rig.fault(latency_ms=5, count=-1)  # hold each request so calls overlap
    try:
        sent = await asyncio.gather(
            *(client.send_email(**EMAIL, idempotency_key=f"c-{i}") for i in range(500))
        )
    finally:
        await http.aclose()
    assert len({s.id for s in sent}) == 500
    stats = (await rig.control.get("/_sandbox/stats")).json()
    assert stats["requests"] == 500
    assert 1 < stats["max_in_flight"] <= 8


async def test_concurrency_cap_below_pool_is_honoured(rig: Rig) -> None:
    http = layer(pool_size=50, concurrency=3)
    client = resend(http, rig)
    await rig.fault(latency_ms=20, count=-1)
    try:
        await asyncio.gather(
            *(client.send_email(**EMAIL, idempotency_key=f"d-{i}") for i in range(60))
        )
    finally:
        await http.aclose()
    stats = (await rig.control.get("/_sandbox/stats")).json()
    assert 1 < stats["max_in_flight"] <= 3


# Outbound rate limit -------------------------------------------------------------------


async def test_outbound_rate_limit_fails_fast_when_the_window_is_far(rig: Rig) -> None:
    http = layer(rate_limit="2/minute", rate_limit_max_wait=0.5)
    client = resend(http, rig, key=f"re_{uuid.uuid4().hex}")
    try:
        await client.send_email(**EMAIL, idempotency_key="r-1")
        await client.send_email(**EMAIL, idempotency_key="r-2")
        with pytest.raises(RateLimitedLocally) as info:
            await client.send_email(**EMAIL, idempotency_key="r-3")
        # Another credential has its own budget.
        other = resend(http, rig, key=f"re_{uuid.uuid4().hex}")
        await other.send_email(**EMAIL, idempotency_key="r-4")
    finally:
        await http.aclose()
    assert info.value.retryable and info.value.retry_after and info.value.retry_after > 30
    assert len(await rig.recorded()) == 3  # the refused call never reached the vendor
    assert isinstance(to_gateway_error(info.value), UpstreamUnavailable)


async def test_outbound_rate_limit_waits_when_the_window_frees_soon(rig: Rig) -> None:
    http = layer(rate_limit="2/second", rate_limit_max_wait=3)
    client = resend(http, rig, key=f"re_{uuid.uuid4().hex}")
    try:
        for i in range(3):
            await client.send_email(**EMAIL, idempotency_key=f"w-{i}")
    finally:
        await http.aclose()
    recorded = await rig.recorded()
    assert len(recorded) == 3
    assert recorded[2]["at"] - recorded[0]["at"] >= 0.9  # the third waited for the window


async def test_outbound_rate_limit_is_shared_through_redis(rig: Rig, redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    key = f"re_{uuid.uuid4().hex}"
    one = ProviderRegistry(redis_url=redis_url, prefix=prefix)
    two = ProviderRegistry(redis_url=redis_url, prefix=prefix)
    for registry in (one, two):
        registry.configure(ProviderConfig(name="resend", retry=FAST_RETRY, rate_limit="2/minute"))
    try:
        a = ResendClient(one.http("resend"), key, base_url=rig.url)
        b = ResendClient(two.http("resend"), key, base_url=rig.url)
        await a.send_email(**EMAIL, idempotency_key="s-1")
        await b.send_email(**EMAIL, idempotency_key="s-2")
        with pytest.raises(RateLimitedLocally):
            await a.send_email(**EMAIL, idempotency_key="s-3")
        with pytest.raises(RateLimitedLocally):
            await b.send_email(**EMAIL, idempotency_key="s-4")
    finally:
        await one.aclose()
        await two.aclose()
    assert len(await rig.recorded()) == 2


async def test_leased_budget_still_refuses_over_the_limit(rig: Rig) -> None:
    # 200/day is drawn in leases of 2 units, spent without asking the store; the 201st
    # call of the day is refused all the same, and reaches no vendor. (A day, not a
    # minute: the sliding-window counter lets a few more through just after its window's
    # edge, by design, and a slow run could cross a minute's.)
    http = layer(rate_limit="200/day", rate_limit_max_wait=0.2)
    client = resend(http, rig, key=f"re_{uuid.uuid4().hex}")
    sent = await client.send_email(**EMAIL, idempotency_key="l-0")
    try:
        for _ in range(199):
            await client.get_email(sent.id)
        with pytest.raises(RateLimitedLocally):
            await client.get_email(sent.id)
    finally:
        await http.aclose()
    assert len(await rig.recorded()) == 200


# Concurrency slots ---------------------------------------------------------------------


async def test_a_slot_is_taken_at_once_only_when_free_and_nobody_queues() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    assert not slots.try_acquire()  # full
    started = asyncio.Event()

    async def queue() -> bool:
        started.set()
        return await slots.acquire()  # suspends in the queue before `started` is seen

    queued = asyncio.ensure_future(queue())
    await started.wait()
    assert not slots.try_acquire() and not queued.done()
    slots.release()  # the freed slot is the queued caller's, not the next comer's
    assert not slots.try_acquire()
    assert await queued
    slots.release()
    assert slots.try_acquire()


async def test_a_cancelled_call_gives_its_slot_back_and_records_nothing(rig: Rig) -> None:
    # One slot: were the cancelled call's slot kept, the next call would queue for it
    # and fail with `local_concurrency` instead of reaching the vendor.
    http = layer(concurrency=1, timeouts=Timeouts(connect=1, read=5, total=1))
    client = resend(http, rig)
    try:
        sent = await client.send_email(**EMAIL, idempotency_key="cancel-1")
        await rig.fault(latency_ms=3000, count=1)
        stalled = asyncio.ensure_future(client.get_email(sent.id))

        async def stalling() -> bool:
            return (await rig.control.get("/_sandbox/stats")).json()["in_flight"] == 1

        await eventually(stalling, "the sandbox holds the call")
        stalled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stalled
        assert (await client.get_email(sent.id)).id == sent.id
    finally:
        await http.aclose()
    assert http.stats.calls == 2 and http.stats.failures == 0


# Metrics -------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_each_call_by_provider_operation_and_outcome(rig: Rig) -> None:
    # Each layer keeps its books' handles; two layers of one provider add to the same
    # series, another provider or operation to its own.
    read, other = f"read_{uuid.uuid4().hex[:8]}", f"other_{uuid.uuid4().hex[:8]}"
    one, two = layer(), layer()
    mirror = ProviderHTTP(ProviderConfig(name="resend_mirror", retry=FAST_RETRY))
    try:
        sent = await resend(one, rig).send_email(**EMAIL, idempotency_key="m-1")
        for http in (one, one, two):
            await resend(http, rig).get_email(sent.id, operation=read)
        with pytest.raises(ProviderError):
            await resend(one, rig).get_email("no-such-email", operation=read)  # 404
        await resend(two, rig).get_email(sent.id, operation=other)
        await resend(mirror, rig).get_email(sent.id, operation=read)
    finally:
        for http in (one, two, mirror):
            await http.aclose()
    calls = "switchboard_outbound_calls_total"
    assert sample(calls, provider="resend", operation=read, outcome="success") == 3
    assert sample(calls, provider="resend", operation=read, outcome="failure") == 1
    assert sample(calls, provider="resend", operation=other, outcome="success") == 1
    assert sample(calls, provider="resend_mirror", operation=read, outcome="success") == 1
    seconds = "switchboard_outbound_call_seconds"
    assert sample(f"{seconds}_count", provider="resend", operation=read) == 4
    assert sample(f"{seconds}_bucket", provider="resend", operation=read, le="+Inf") == 4
    assert 0 < sample(f"{seconds}_sum", provider="resend", operation=read) < 4 * 30
    assert sample(f"{seconds}_count", provider="resend", operation=other) == 1
    # Cumulative buckets, as prometheus_client's Histogram exposes them.
    bounds = [*metrics.LATENCY_BUCKETS, float("inf")]
    counts = [
        sample(f"{seconds}_bucket", provider="resend", operation=read, le=floatToGoString(b))
        for b in bounds
    ]
    assert counts == sorted(counts) and counts[-1] == 4
    assert sample(f"{seconds}_created", provider="resend", operation=read) > 0


# Registry, hooks, health ---------------------------------------------------------------


async def test_registry_shares_one_layer_and_reports_health(rig: Rig) -> None:
    registry = ProviderRegistry()
    registry.configure(ProviderConfig(name="resend", retry=FAST_RETRY))
    events: list[FailureEvent] = []

    async def hook(event: FailureEvent) -> None:
        events.append(event)

    def broken_hook(event: FailureEvent) -> None:
        raise RuntimeError("a broken hook must not break the call path")

    registry.add_failure_hook(broken_hook)
    registry.add_failure_hook(hook)
    try:
        assert registry.http("resend") is registry.http("resend")
        client = ResendClient(registry.http("resend"), KEY, base_url=rig.url)
        await client.send_email(**EMAIL, idempotency_key="h-1")
        await rig.fault(status=500, count=-1)
        with pytest.raises(ProviderError):
            await client.send_email(**EMAIL, idempotency_key=None)
        health = (await registry.health())["resend"]
        session = registry.http("resend").session()
    finally:
        await registry.aclose()
    assert session.closed  # the app's lifespan calls aclose()
    assert health.breaker_state == "closed"
    assert health.consecutive_failures == 1
    assert health.recent_failures == 1 and health.calls == 2
    assert health.last_error and "500" in health.last_error
    assert health.last_latency is not None and health.last_success_at is not None
    assert [e.status for e in events] == [500]
    assert registry.http("resend").session().closed is False  # reopened lazily after close
    await registry.aclose()


# Header parsing -----------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": "2"}) == 2
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    date = formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after({"Retry-After": "soon"}, 429) is None
    assert parse_retry_after({"RateLimit-Reset": "4"}, 429) == 4
    assert parse_retry_after({"X-RateLimit-Reset": str(now + 7)}, 429, now=now) == 7
    assert parse_retry_after({"x-ratelimit-reset-requests": "6m0s"}, 429) == 360
    assert parse_retry_after({"x-ratelimit-reset-tokens": "20ms"}, 429) == pytest.approx(0.02)
    assert parse_retry_after({"RateLimit-Reset": "4"}, 503) is None  # only for 429s
    assert parse_retry_after({}) is None
