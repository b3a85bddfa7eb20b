"""The models the caller's credential can use, with their prices. The vendor's list changes
rarely and costs a round trip, so each credential's list is kept for MODELS_CACHE_SECONDS
in the process (`kit.ttl_cache`; concurrent misses share one vendor call)."""

from __future__ import annotations

from kit.ttl_cache import read_through
from providers.errors import ProviderError
from providers.openai import ModelInfo
from resolvers.ai.prices import prices
from resolvers.ai.state import ai_state
from resolvers.ai.types import ModelOption
from resolvers.ai.vendor import credential, gateway_error, provider
from resolvers.context import Context
from resolvers.operations import operation

MODELS_CACHE_SECONDS = 300.0


@operation("ai:use")
async def ai_models(ctx: Context) -> list[ModelOption]:
    """The models the caller's credential can use, with their prices."""
    cred, _ = await credential(ctx)
    key = (cred.fingerprint, cred.organization, cred.base_url)

    async def load() -> list[ModelInfo]:
        try:
            return await provider(ctx.services).list_models(cred)
        except ProviderError as error:
            raise gateway_error(error) from None

    models = await read_through(ai_state(ctx.services).models, key, MODELS_CACHE_SECONDS, load)
    assert models is not None  # load() answers or raises
    options = []
    for m in sorted(models, key=lambda m: m.id):
        price_in, price_out = prices(ctx.services, m.id)
        options.append(ModelOption(m.id, m.owned_by, price_in, price_out))
    return options
