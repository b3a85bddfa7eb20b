"""Every provider's HTTP door, one per process, and the health snapshot built on them.

The app builds one `ProviderRegistry` (`build_registry(settings)`), keeps it in
`services.providers` and closes it in its lifespan. Provider clients
get their shared layer from it:

    http = registry.http("resend")            # one ProviderHTTP per provider
    client = ResendClient(http, api_key, base_url=...)
    ai = registry.openai()                    # the OpenAI SDK clients, on that layer

The registry builds and closes every client: the pooled sessions of each layer, and the
SDK-based clients that keep connection pools of their own (OpenAI: one `AsyncOpenAI`
per credential and base URL, made on demand by `OpenAIProvider`). `aclose()` closes them
all; each reopens on next use.

`CLIENTS` is the one list of providers that have a client: each vendor module declares
its `CONFIG` and is added there. Health lists these providers only, and credentials are
accepted for these only (`has_client`). Configuration per provider comes from it too,
overridden by `OUTBOUND_RATE_LIMITS`; unknown providers get defaults.

`on_failure` hooks (`add_failure_hook`) receive a `providers.errors.FailureEvent`
for every call that finally failed, whatever the provider — the app installs the
one that writes the integration error log.

`health()` answers, per provider: breaker state (closed / half_open / open, from
the shared store, so every process reports the same), failures in the last five
minutes, the last error and its time, the last call's latency and the last
success (those four from this process), and the last health probe's outcome
(`record_probe`: the background probe's cheap authenticated call with the system
credential, this process).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kit.ratelimit import RateLimiter
from kit.settings import Settings
from kit.ssrf import Policy
from providers import (
    google_calendar,
    notion,
    openai,
    paypal,
    resend,
    rossum,
    sendgrid,
    stripe,
    twilio,
    zoom,
)
from providers.breaker import BreakerState, BreakerStore, make_breaker_store
from providers.http import FailureHook, ProviderConfig, ProviderHTTP, ProviderStats
from providers.tokens import TokenCache

# Every provider that has a client, with its configuration (vendor modules own theirs).
# A new vendor module adds its CONFIG here: that is what makes it "have a client".
CLIENTS: dict[str, ProviderConfig] = {
    config.name: config
    for config in (
        openai.CONFIG,
        resend.CONFIG,
        sendgrid.CONFIG,
        rossum.CONFIG,
        stripe.CONFIG,
        twilio.CONFIG,
        paypal.CONFIG,
        google_calendar.CONFIG,
        zoom.CONFIG,
        notion.CONFIG,
    )
}


def has_client(provider: str) -> bool:
    """Whether the gateway has a client for `provider` (health lists it, credentials for
    it are accepted); the IntegrationProvider enum also names vendors still to come."""
    return provider in CLIENTS


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The last background health probe of a provider's system credential (this process)."""

    ok: bool
    latency: float  # seconds
    at: float  # epoch seconds
    error: str | None  # what failed, secrets removed by the caller
    failures_in_a_row: int  # failed probes since the last good one (0 when ok)


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    breaker_state: BreakerState
    consecutive_failures: int  # as the breaker counts them (shared across processes)
    recent_failures: int  # failed calls in the last five minutes, this process
    calls: int  # calls made by this process since start
    last_error: str | None
    last_error_at: float | None  # epoch seconds
    last_latency: float | None  # seconds, the last completed call
    last_success_at: float | None  # epoch seconds
    probe: ProbeResult | None = None  # the last probe; None when never probed


class ProviderRegistry:
    def __init__(
        self,
        *,
        limiter: RateLimiter | None = None,
        breakers: BreakerStore | None = None,
        configs: dict[str, ProviderConfig] | None = None,
        redis_url: str = "",
        prefix: str = "switchboard",
        policy: Policy | None = None,
        openai_max_concurrent: int = 50,
    ) -> None:
        # The outbound guard's policy for tenant- and user-set base URLs.
        self.policy = policy if policy is not None else Policy()
        self.limiter = limiter if limiter is not None else RateLimiter(redis_url, prefix=prefix)
        self.breakers = (
            breakers if breakers is not None else make_breaker_store(redis_url, prefix=prefix)
        )
        self.configs: dict[str, ProviderConfig] = dict(CLIENTS)
        self.configs.update(configs or {})
        self.hooks: list[FailureHook] = []
        self._clients: dict[str, ProviderHTTP] = {}
        self._stats: dict[str, ProviderStats] = {}
        self._probes: dict[str, ProbeResult] = {}
        self.openai_max_concurrent = openai_max_concurrent  # requests in flight per key
        self._openai: openai.OpenAIProvider | None = None
        # Rossum login tokens, one per credential for this process (renewed single-flight).
        self._rossum_tokens = rossum.TokenCache()
        self._stripe: stripe.StripeProvider | None = None
        # PayPal access tokens, one per REST app for this process (renewed single-flight).
        self._paypal_tokens = TokenCache()
        self._notion: notion.NotionProvider | None = None

    def configure(self, config: ProviderConfig) -> None:
        """Set a provider's configuration (before its first call)."""
        self.configs[config.name] = config
        self._clients.pop(config.name, None)

    def config(self, provider: str) -> ProviderConfig:
        return self.configs.get(provider) or ProviderConfig(name=provider)

    def http(self, provider: str) -> ProviderHTTP:
        client = self._clients.get(provider)
        if client is None:
            client = ProviderHTTP(
                self.config(provider),
                breakers=self.breakers,
                limiter=self.limiter,
                hooks=self.hooks,  # shared list: hooks added later reach every provider
                stats=self._stats.setdefault(provider, ProviderStats()),
                policy=self.policy,
            )
            self._clients[provider] = client
        return client

    def openai(self) -> openai.OpenAIProvider:
        """The OpenAI SDK clients (one per credential and base URL, made on demand) on
        this registry's OpenAI layer; closed by `aclose()`."""
        client = self._openai
        if client is None:
            client = self._openai = openai.OpenAIProvider(
                self.http(openai.PROVIDER), max_concurrent=self.openai_max_concurrent
            )
        return client

    def stripe(self) -> stripe.StripeProvider:
        """The Stripe SDK clients (one per credential and base URL) on this registry's
        Stripe layer; forgotten by `aclose()`."""
        client = self._stripe
        if client is None:
            client = self._stripe = stripe.StripeProvider(self.http(stripe.PROVIDER))
        return client

    def notion(self) -> notion.NotionProvider:
        """The Notion SDK clients (one per key and base URL) on this registry's Notion
        layer; closed by `aclose()`."""
        client = self._notion
        if client is None:
            client = self._notion = notion.NotionProvider(self.http(notion.PROVIDER))
        return client

    def rossum_tokens(self) -> rossum.TokenCache:
        """The process's Rossum login tokens (every `RossumClient` shares them)."""
        return self._rossum_tokens

    def paypal_tokens(self) -> TokenCache:
        """The process's PayPal access tokens (every `PayPalClient` shares them)."""
        return self._paypal_tokens

    def add_failure_hook(self, hook: FailureHook) -> None:
        self.hooks.append(hook)

    def remove_failure_hook(self, hook: FailureHook) -> None:
        if hook in self.hooks:
            self.hooks.remove(hook)

    def record_probe(
        self, provider: str, *, ok: bool, latency: float, error: str | None = None
    ) -> ProbeResult:
        """Keep the outcome of a health probe; health reports the last one."""
        previous = self._probes.get(provider)
        in_a_row = 0 if ok else (previous.failures_in_a_row if previous else 0) + 1
        result = ProbeResult(ok, latency, time.time(), None if ok else error, in_a_row)
        self._probes[provider] = result
        return result

    @property
    def providers(self) -> list[str]:
        return sorted(set(self.configs) | set(self._clients))

    async def health_of(self, provider: str, credential: str | None = None) -> ProviderHealth:
        """The provider's health; with `credential` (a tenant's or user's own), its
        breaker is that credential's, since the provider's counts shared ones only."""
        http = self.http(provider)
        if credential is None:
            state, failures = await http.breaker_state()
        else:
            state, failures = await http.credential_breaker_state(credential)
        stats = self._stats.setdefault(provider, ProviderStats())
        return ProviderHealth(
            provider=provider,
            breaker_state=state,
            consecutive_failures=failures,
            recent_failures=stats.recent_failure_count(),
            calls=stats.calls,
            last_error=stats.last_error,
            last_error_at=stats.last_error_at,
            last_latency=stats.last_latency,
            last_success_at=stats.last_success_at,
            probe=self._probes.get(provider),
        )

    async def health(self, providers: Iterable[str] | None = None) -> dict[str, ProviderHealth]:
        names = list(providers) if providers is not None else self.providers
        return {name: await self.health_of(name) for name in names}

    async def aclose(self) -> None:
        """Close every SDK client, every session and the breaker store (the app's
        lifespan calls this)."""
        sdk, self._openai = self._openai, None
        if sdk is not None:
            await sdk.aclose()
        payments, self._stripe = self._stripe, None
        if payments is not None:
            await payments.aclose()
        second_brain, self._notion = self._notion, None
        if second_brain is not None:
            await second_brain.aclose()
        for client in list(self._clients.values()):
            await client.aclose()
        await self.breakers.aclose()


def build_registry(settings: Settings, limiter: RateLimiter | None = None) -> ProviderRegistry:
    """The app's registry: Redis-shared breakers and limits when REDIS_URL is set."""
    prefix = settings.redis_key_prefix
    registry = ProviderRegistry(
        limiter=limiter,
        redis_url=settings.redis_url,
        prefix=prefix,
        policy=settings.outbound_policy(),
        openai_max_concurrent=settings.openai_max_concurrent_requests,
    )
    for provider, spec in settings.outbound_rate_limits.items():
        base = registry.config(provider)
        registry.configure(dataclasses.replace(base, rate_limit=spec or None))
    ai = registry.config(openai.PROVIDER)
    if ai.rate_limit is None:  # OPENAI_REQUESTS_PER_MINUTE unless OUTBOUND_RATE_LIMITS says
        rpm = settings.openai_requests_per_minute
        registry.configure(dataclasses.replace(ai, rate_limit=f"{rpm}/minute"))
    return registry
