"""Embeddings of chunks and questions, from the OpenAI embeddings API (through the
provider layer and the credential chain: the tenant's key, the system key, or the
sandbox), stored compactly as float32 bytes."""

from __future__ import annotations

import array
import logging
import operator
import struct
import sys
import uuid

from kit.errors import GatewayError
from providers.errors import ProviderError
from providers.openai import OpenAICredential
from resolvers import credentials
from resolvers.ai.vendor import provider
from resolvers.context import Context, Services

log = logging.getLogger("switchboard.knowledge")

MODEL = "text-embedding-3-small"
DIMENSIONS = 256  # OpenAI shortens text-embedding-3 vectors on request; 1 KB a chunk
BATCH = 96  # texts per request


def pack(vector: list[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack(data: bytes) -> array.array[float]:
    values = array.array("f")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def similarity(a: array.array[float] | list[float], b: array.array[float] | list[float]) -> float:
    """Cosine similarity of two unit vectors (OpenAI's are normalised)."""
    return float(sum(map(operator.mul, a, b)))


def _cred(resolved: credentials.ResolvedCredential) -> OpenAICredential:
    return OpenAICredential.of(
        resolved.secrets, resolved.base_url, own=resolved.own, guarded=resolved.guard_url
    )


async def embed_texts(services: Services, tenant_id: int, texts: list[str]) -> list[list[float]]:
    """One vector per text, with the tenant's credential (background indexing)."""
    ctx = Context(services=services, request_id=f"knowledge-{uuid.uuid4().hex[:12]}")
    resolved = await credentials.resolve_tenant_credential(ctx, "openai", tenant_id)
    cred = _cred(resolved)
    out: list[list[float]] = []
    for start in range(0, len(texts), BATCH):
        got = await provider(services).embed(
            cred, texts[start : start + BATCH], model=MODEL, dimensions=DIMENSIONS
        )
        out += got.vectors
    return out


async def embed_query(ctx: Context, text: str) -> list[float] | None:
    """The question's vector with the caller's credential; None when the embeddings API
    cannot answer (the search goes on with full-text ranking alone)."""
    try:
        resolved = await credentials.resolve_credential(ctx, "openai")
        got = await provider(ctx.services).embed(
            _cred(resolved), [text], model=MODEL, dimensions=DIMENSIONS
        )
    except (ProviderError, GatewayError) as err:
        log.warning("knowledge search without embeddings: %s", type(err).__name__)
        return None
    return got.vectors[0] if got.vectors else None
