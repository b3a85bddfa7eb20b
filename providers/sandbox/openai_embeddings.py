"""The OpenAI sandbox's embeddings: deterministic vectors in which similar texts are near.

A text becomes a bag of features — its words (lower-cased, a plural's `s` dropped) and
the character trigrams of each word — each hashed to one of `dimensions` coordinates with
a sign (the hashing trick), words weighing more than trigrams; the vector is normalised
to length 1, as OpenAI's are. Texts sharing words (or parts of words: "invoice" and
"invoices", "refund" and "refunded") share coordinates, so their cosine similarity is
high; unrelated texts are near orthogonal. The same text always gives the same vector.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct

MODELS: dict[str, int] = {  # model -> its full dimension
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
WORD_WEIGHT = 1.0
TRIGRAM_WEIGHT = 0.35


def features(text: str) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for raw in _WORD.findall(text.lower()):
        word = raw[:-1] if len(raw) > 3 and raw.endswith("s") and not raw.endswith("ss") else raw
        out.append(("w:" + word, WORD_WEIGHT))
        padded = f"#{word}#"
        out.extend(("t:" + padded[i : i + 3], TRIGRAM_WEIGHT) for i in range(len(padded) - 2))
    return out


def embed(text: str, dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    for feature, weight in features(text):
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        vector[value % dimensions] += weight if (value >> 63) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0] = 1.0  # an empty text: still a unit vector, like every answer
        return vector
    return [v / norm for v in vector]


def tokens(text: str) -> int:
    """A rough token count (OpenAI's tokenizer averages ~4 characters a token)."""
    return max(1, math.ceil(len(text) / 4))


def as_base64(vector: list[float]) -> str:
    import base64

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
