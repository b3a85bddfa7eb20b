"""Circuit breakers: the state machine on memory and Redis, and the layer failing fast.

Over real HTTP against the Resend sandbox: while a breaker is open the sandbox
records no new request, which is the proof that calls never touched the network.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from kit import metrics
from kit.errors import UpstreamUnavailable
from providers.breaker import (
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    MemoryBreakerStore,
    RedisBreakerStore,
)
from providers.errors import CircuitOpen, ProviderError
from providers.http import ProviderConfig, ProviderHTTP
from providers.registry import ProviderRegistry
from providers.resend import ResendClient
from providers.retry import RetryPolicy
from providers.sandbox.resend import ResendSandbox
from resolvers.upstream import to_gateway_error
from tests.conftest import REDIS_URL, running_server, unavailable

KEY = "re_breaker_key_01"
EMAIL = {"sender": "hello@acme.test", "to": "ada@example.com", "subject": "Hi", "text": "x"}
NO_RETRY = RetryPolicy(max_attempts=1)
# Short enough for Redis's own clock (server time, ms) to pass it at once; the memory
# stores run on CLOCK, which wait_out() moves forward.
POLICY = BreakerPolicy(threshold=3, cooldown=0.05, probe_timeout=5, cache_ttl=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


@dataclass
class Rig:
    sandbox: ResendSandbox
    url: str
    control: httpx.AsyncClient

    async def fault(self, **fault: object) -> None:
        r = await self.control.post("/_sandbox/faults", json=fault)
        assert r.status_code == 201, r.text

    async def count(self) -> int:
        return len((await self.control.get("/_sandbox/requests")).json()["requests"])


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sandbox = ResendSandbox()
    async with running_server(sandbox) as url, httpx.AsyncClient(base_url=url) as control:
        yield Rig(sandbox, url, control)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BreakerStore]:
    if request.param == "memory":
        yield MemoryBreakerStore(clock=CLOCK)
        return
    s = RedisBreakerStore(REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
    try:
        await asyncio.wait_for(s._redis.ping(), 3)
    except Exception as exc:
        await s.aclose()
        unavailable("Redis", exc)
    yield s
    await s.aclose()


def make_http(breakers: BreakerStore, policy: BreakerPolicy = POLICY) -> ProviderHTTP:
    return ProviderHTTP(
        ProviderConfig(name="resend", retry=NO_RETRY, breaker=policy), breakers=breakers
    )


def gauge() -> float | None:
    return metrics.REGISTRY.get_sample_value("switchboard_breaker_state", {"provider": "resend"})


async def wait_out(seconds: float) -> None:
    """Let `seconds` pass: the memory stores' clock jumps, Redis's (milliseconds here)
    passes for real."""
    CLOCK.now += seconds + 0.01
    await asyncio.sleep(seconds + 0.01)


# The state machine --------------------------------------------------------------------


async def test_state_machine(store: BreakerStore) -> None:
    name = f"p-{uuid.uuid4().hex[:6]}"
    assert (await store.admit(name, POLICY)).allowed
    for _ in range(2):
        assert await store.failure(name, POLICY, probe=False) is BreakerState.CLOSED
    # A success resets the consecutive count.
    assert await store.success(name, POLICY, probe=False) is BreakerState.CLOSED
    assert await store.state(name) == (BreakerState.CLOSED, 0)
    for _ in range(2):
        await store.failure(name, POLICY, probe=False)
    assert await store.failure(name, POLICY, probe=False) is BreakerState.OPEN
    denied = await store.admit(name, POLICY)
    assert not denied.allowed and denied.state is BreakerState.OPEN
    assert denied.retry_after is not None and 0 < denied.retry_after <= POLICY.cooldown
    # A slow success from before the opening does not close it.
    assert await store.success(name, POLICY, probe=False) is BreakerState.OPEN
    await wait_out(POLICY.cooldown)
    probe = await store.admit(name, POLICY)
    assert probe.allowed and probe.probe
    # Exactly one probe: everyone else still fails fast while it runs.
    other = await store.admit(name, POLICY)
    assert not other.allowed and other.state is BreakerState.HALF_OPEN
    # The probe fails: open for another cool-down.
    assert await store.failure(name, POLICY, probe=True) is BreakerState.OPEN
    assert not (await store.admit(name, POLICY)).allowed
    await wait_out(POLICY.cooldown)
    probe = await store.admit(name, POLICY)
    assert probe.probe
    assert await store.success(name, POLICY, probe=True) is BreakerState.CLOSED
    assert (await store.admit(name, POLICY)).allowed
    assert await store.state(name) == (BreakerState.CLOSED, 0)


async def test_a_vanished_probe_frees_its_slot(store: BreakerStore) -> None:
    policy = BreakerPolicy(threshold=1, cooldown=0.05, probe_timeout=0.1, cache_ttl=0)
    name = f"p-{uuid.uuid4().hex[:6]}"
    await store.failure(name, policy, probe=False)
    await wait_out(policy.cooldown)
    assert (await store.admit(name, policy)).probe  # ...and that caller dies silently
    assert not (await store.admit(name, policy)).allowed
    await wait_out(policy.probe_timeout)
    assert (await store.admit(name, policy)).probe


# The layer over HTTP -----------------------------------------------------------------


async def test_repeated_503s_open_the_breaker_then_a_probe_closes_it(rig: Rig) -> None:
    http = make_http(MemoryBreakerStore(clock=CLOCK))
    client = ResendClient(http, KEY, base_url=rig.url)
    await rig.fault(status=503, count=-1)
    try:
        for _ in range(POLICY.threshold):
            with pytest.raises(ProviderError) as info:
                await client.send_email(**EMAIL, idempotency_key=None)
            assert info.value.status == 503
        assert await rig.count() == POLICY.threshold
        assert gauge() == 2

        # Open: fail fast, nothing reaches the vendor.
        for _ in range(5):
            with pytest.raises(CircuitOpen) as fast:
                await client.send_email(**EMAIL, idempotency_key=None)
        assert await rig.count() == POLICY.threshold
        gw = to_gateway_error(fast.value)
        assert isinstance(gw, UpstreamUnavailable)
        ext = gw.as_extensions()
        assert ext["code"] == "UPSTREAM_UNAVAILABLE" and ext["provider"] == "resend"
        assert ext["retryAfter"] >= 1
        assert (await http.breaker_state())[0] == BreakerState.OPEN

        # The vendor recovers; after the cool-down one probe goes through and closes it.
        await rig.control.delete("/_sandbox/faults")
        await wait_out(POLICY.cooldown)
        sent = await client.send_email(**EMAIL, idempotency_key=None)
        assert sent.id
        assert await rig.count() == POLICY.threshold + 1
        assert (await http.breaker_state())[0] == BreakerState.CLOSED
        assert gauge() == 0
        await client.send_email(**EMAIL, idempotency_key=None)
    finally:
        await http.aclose()


async def test_a_success_between_failures_resets_the_count_through_the_layer(
    store: BreakerStore, rig: Rig
) -> None:
    # The layer skips a breaker with nothing on record (BreakerStore.clear); one with
    # failures on record still hears of the success that resets them, so only
    # `threshold` consecutive failures open it.
    policy = BreakerPolicy(threshold=3, cooldown=30, probe_timeout=5, cache_ttl=0.5)
    http = make_http(store, policy)
    client = ResendClient(http, KEY, base_url=rig.url)
    try:
        sent = await client.send_email(**EMAIL, idempotency_key=None)
        for _ in range(3):
            await rig.fault(status=503, count=2)
            for _ in range(2):
                with pytest.raises(ProviderError):
                    await client.get_email(sent.id)
            assert (await client.get_email(sent.id)).id == sent.id
        assert await http.breaker_state() == (BreakerState.CLOSED, 0)
        await rig.fault(status=503, count=3)
        for _ in range(3):
            with pytest.raises(ProviderError):
                await client.get_email(sent.id)
        assert (await http.breaker_state())[0] is BreakerState.OPEN
        with pytest.raises(CircuitOpen):
            await client.get_email(sent.id)
    finally:
        await http.aclose()


async def test_caller_errors_do_not_open_the_breaker(rig: Rig) -> None:
    http = make_http(MemoryBreakerStore(clock=CLOCK))
    client = ResendClient(http, KEY, base_url=rig.url)
    try:
        for _ in range(POLICY.threshold * 2):
            with pytest.raises(ProviderError) as info:
                await client.send_email(**{**EMAIL, "to": "broken"}, idempotency_key=None)
            assert info.value.is_caller_error
        assert (await client.send_email(**EMAIL, idempotency_key=None)).id
    finally:
        await http.aclose()
    assert (await http.breaker_state())[0] == BreakerState.CLOSED


async def test_a_bad_key_opens_only_its_own_breaker(rig: Rig) -> None:
    http = make_http(MemoryBreakerStore(clock=CLOCK))
    bad = ResendClient(http, "re_invalid_tenant_key", base_url=rig.url)
    good = ResendClient(http, KEY, base_url=rig.url)
    try:
        for _ in range(POLICY.threshold):
            with pytest.raises(ProviderError) as info:
                await bad.send_email(**EMAIL, idempotency_key=None)
            assert info.value.status == 403 and info.value.is_auth_error
        seen = await rig.count()
        with pytest.raises(CircuitOpen) as fast:
            await bad.send_email(**EMAIL, idempotency_key=None)
        assert fast.value.scope == "credential"
        assert await rig.count() == seen  # the bad key no longer reaches the vendor
        assert (await good.send_email(**EMAIL, idempotency_key=None)).id  # others are unaffected
    finally:
        await http.aclose()
    assert (await http.breaker_state())[0] == BreakerState.CLOSED


async def test_breaker_shared_through_redis_by_two_processes(rig: Rig, redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    shared = BreakerPolicy(threshold=3, cooldown=30, probe_timeout=30, cache_ttl=0.5)
    one = ProviderRegistry(redis_url=redis_url, prefix=prefix)
    two = ProviderRegistry(redis_url=redis_url, prefix=prefix)
    for registry in (one, two):
        registry.configure(ProviderConfig(name="resend", retry=NO_RETRY, breaker=shared))
    a = ResendClient(one.http("resend"), KEY, base_url=rig.url)
    b = ResendClient(two.http("resend"), KEY, base_url=rig.url)
    try:
        await rig.fault(status=500, count=-1)
        for _ in range(shared.threshold):
            with pytest.raises(ProviderError):
                await a.send_email(**EMAIL, idempotency_key=None)
        seen = await rig.count()
        assert seen == shared.threshold
        # The second "process" never called the vendor, yet it fails fast.
        with pytest.raises(CircuitOpen) as fast:
            await b.send_email(**EMAIL, idempotency_key=None)
        assert fast.value.retry_after is not None and fast.value.retry_after > 20
        assert await rig.count() == seen
        assert (await two.health())["resend"].breaker_state == BreakerState.OPEN
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_closed_state_is_cached_briefly(rig: Rig, redis_url: str) -> None:
    """With cache_ttl, a process that just saw 'closed' may let a call through for up to
    that long after another process opened the breaker; after it, it fails fast."""
    prefix = f"test-{uuid.uuid4().hex}"
    shared = BreakerPolicy(threshold=2, cooldown=30, probe_timeout=30, cache_ttl=0.3)
    one = ProviderRegistry(redis_url=redis_url, prefix=prefix)
    two = ProviderRegistry(redis_url=redis_url, prefix=prefix)
    for registry in (one, two):
        registry.configure(ProviderConfig(name="resend", retry=NO_RETRY, breaker=shared))
    a = ResendClient(one.http("resend"), KEY, base_url=rig.url)
    b = ResendClient(two.http("resend"), KEY, base_url=rig.url)
    try:
        assert (await b.send_email(**EMAIL, idempotency_key=None)).id  # b caches "closed"
        await rig.fault(status=500, count=-1)
        for _ in range(shared.threshold):
            with pytest.raises(ProviderError):
                await a.send_email(**EMAIL, idempotency_key=None)
        await wait_out(shared.cache_ttl)
        seen = await rig.count()
        with pytest.raises(CircuitOpen):
            await b.send_email(**EMAIL, idempotency_key=None)
        assert await rig.count() == seen
    finally:
        await one.aclose()
        await two.aclose()


async def test_half_open_lets_exactly_one_probe_through(rig: Rig) -> None:
    http = make_http(MemoryBreakerStore(clock=CLOCK))
    client = ResendClient(http, KEY, base_url=rig.url)
    try:
        await rig.fault(status=500, count=POLICY.threshold)
        for _ in range(POLICY.threshold):
            with pytest.raises(ProviderError):
                await client.send_email(**EMAIL, idempotency_key=None)
        await wait_out(POLICY.cooldown)
        await rig.fault(latency_ms=300, count=1)  # the probe is slow
        results = await asyncio.gather(
            *(client.send_email(**EMAIL, idempotency_key=None) for _ in range(10)),
            return_exceptions=True,
        )
    finally:
        await http.aclose()
    passed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, CircuitOpen)]
    assert len(passed) == 1 and len(refused) == 9
    assert (await http.breaker_state())[0] == BreakerState.CLOSED


async def test_redis_down_fails_open(rig: Rig) -> None:
    """A Redis outage must not become an outage of every provider: breaker and outbound
    limit fall back to letting calls through (and log that they do)."""
    from tests.conftest import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    registry = ProviderRegistry(redis_url=dead, prefix=f"test-{uuid.uuid4().hex}")
    registry.configure(
        ProviderConfig(name="resend", retry=NO_RETRY, breaker=POLICY, rate_limit="2/second")
    )
    client = ResendClient(registry.http("resend"), KEY, base_url=rig.url)
    try:
        sent = await client.send_email(**EMAIL, idempotency_key=None)
        assert sent.id
        await rig.fault(status=500, count=1)
        with pytest.raises(ProviderError) as info:
            await client.send_email(**EMAIL, idempotency_key=None)
        assert info.value.status == 500  # the vendor's error, not a Redis one
        assert (await registry.health())["resend"].breaker_state == BreakerState.CLOSED
    finally:
        await registry.aclose()
    assert await rig.count() == 2


# One tenant's dead endpoint ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_own_credentials_dead_base_url_leaves_shared_callers_alone(backend: str) -> None:
    """Tenant A set its own OpenAI key with a base URL nobody answers. Its failures open
    A's credential breaker only: tenant B, on the shared (sandbox/system) credential, is
    served, in this process and in another one sharing the breakers through Redis."""
    from kit.ssrf import Policy
    from providers.openai import OpenAICredential, OpenAIProvider
    from providers.sandbox.openai import create_app
    from tests.conftest import free_port

    redis_url = ""
    if backend == "redis":
        probe = RedisBreakerStore(REDIS_URL, prefix="probe")
        try:
            await asyncio.wait_for(probe._redis.ping(), 3)
        except Exception as exc:
            unavailable("Redis", exc)
        finally:
            await probe.aclose()
        redis_url = REDIS_URL
    prefix = f"test-{uuid.uuid4().hex}"
    policy = Policy.build(["127.0.0.1/32"])  # the operator allows loopback (the test rig)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    registries = [
        ProviderRegistry(redis_url=redis_url, prefix=prefix, policy=policy) for _ in range(2)
    ]
    # Opened breakers stay open for the test (Redis's clock is real).
    config = ProviderConfig(
        name="openai", retry=NO_RETRY, breaker=BreakerPolicy(threshold=3, cooldown=30)
    )
    for registry in registries:
        registry.configure(config)
    one, two = (OpenAIProvider(r.http("openai")) for r in registries)
    tenant_a = OpenAICredential("sk-tenant-a-" + uuid.uuid4().hex, base_url=dead, own=True,
                                guarded=True)  # fmt: skip
    try:
        async with running_server(create_app(tokens_per_second=0)) as sandbox:
            shared = OpenAICredential("sk-test-abcdef123456", base_url=f"{sandbox}/v1")
            for _ in range(POLICY.threshold):
                with pytest.raises(ProviderError) as failed:
                    await one.list_models(tenant_a)
                assert not isinstance(failed.value, CircuitOpen)  # the endpoint was tried
            with pytest.raises(CircuitOpen) as fast:
                await one.list_models(tenant_a)
            assert fast.value.scope == "credential"
            # Tenant B, same process and another one: the provider is closed for them.
            for provider in (one, two):
                assert [m.id for m in await provider.list_models(shared)]
            for registry in registries:
                health = (await registry.health(["openai"]))["openai"]
                assert health.breaker_state is BreakerState.CLOSED
                assert health.consecutive_failures == 0
            own = await registries[1].health_of("openai", credential=tenant_a.api_key)
            expected = BreakerState.OPEN if backend == "redis" else BreakerState.CLOSED
            assert own.breaker_state is expected  # shared through Redis, else per process
    finally:
        await one.aclose()
        await two.aclose()
        for registry in registries:
            await registry.aclose()
