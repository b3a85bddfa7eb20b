"""Token estimates and prices.

Billing counts what was received. When the vendor's usage chunk arrives, its counts are
used. When it does not (the client left, the vendor failed mid-way), the counts are
estimates, flagged `estimated`: completion tokens = the number of content chunks received
(OpenAI streams one token per chunk); prompt tokens = `estimate_tokens` over the prompt —
one token per word or punctuation mark, and never fewer than one per four characters —
plus 3 per message for the chat framing. No tokenizer download is needed (tiktoken
fetches its encodings at run time). The same estimate sizes a quota reservation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from resolvers.context import Services

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MILLION = Decimal(1_000_000)
CENTS8 = Decimal("0.00000001")


def estimate_tokens(text: str) -> int:
    """Tokenizer-free token estimate: words and punctuation marks, at least chars/4."""
    if not text:
        return 0
    return max(len(_TOKEN_RE.findall(text)), (len(text) + 3) // 4)


def estimate_prompt_tokens(messages: Sequence[dict[str, str]]) -> int:
    """The prompt estimate: each message's text plus 3 tokens of framing, plus 3 to prime."""
    return sum(estimate_tokens(m["content"]) + 3 for m in messages) + 3


def prices(services: Services, model: str) -> tuple[Decimal, Decimal]:
    """(input, output) USD per million tokens for `model` from AI_PRICES_PER_MILLION."""
    table = services.settings.ai_prices_per_million
    both = table.get(model)
    price_in = table.get(f"{model}:input", both)
    price_out = table.get(f"{model}:output", both)
    if price_in is None:
        price_in = table.get("default:input", table.get("default", Decimal(0)))
    if price_out is None:
        price_out = table.get("default:output", table.get("default", Decimal(0)))
    return Decimal(price_in), Decimal(price_out)


def cost_of(services: Services, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    price_in, price_out = prices(services, model)
    cost = (prompt_tokens * price_in + completion_tokens * price_out) / MILLION
    return cost.quantize(CENTS8, rounding=ROUND_HALF_UP)
