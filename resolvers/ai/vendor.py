"""The OpenAI client, the caller's credential and the vendor's failures as the caller sees
them: kept in one place so that plain and streamed completions and the model list
resolve their credential and report a vendor failure the same way."""

from __future__ import annotations

from kit.errors import GatewayError
from providers.errors import ProviderError
from providers.openai import PROVIDER, OpenAICredential, OpenAIProvider
from resolvers import credentials
from resolvers.context import Context, Services
from resolvers.upstream import provider_registry, to_gateway_error


def provider(services: Services) -> OpenAIProvider:
    """The process's OpenAI client: the registry builds, configures and closes it."""
    return provider_registry(services).openai()


async def credential(ctx: Context) -> tuple[OpenAICredential, str]:
    """The caller's OpenAI credential and where it came from (the ledger's
    `credential_source`)."""
    resolved = await credentials.resolve_credential(ctx, PROVIDER)
    cred = OpenAICredential.of(
        resolved.secrets, resolved.base_url, own=resolved.own, guarded=resolved.guard_url
    )
    return cred, resolved.source.value


def gateway_error(error: ProviderError) -> GatewayError:
    """A vendor failure as the coded error the caller sees (never the key, never a trace).

    The shared mapping (`resolvers.upstream`), with the input field named for the two
    vendor refusals a caller can fix: a prompt too long for the model, an unknown model.
    """
    field = "model" if error.vendor_code == "model_not_found" else "messages"
    return to_gateway_error(error, field=field)
