"""Retry policy for outbound calls: which calls may be retried, and how long to wait.

Waits are exponential with full jitter (`uniform(0, min(cap, base * 2**n))`, the
AWS "full jitter" scheme: retries of many callers spread out instead of arriving
together). When the vendor says when to come back — `Retry-After` (seconds or an
HTTP date) or a rate-limit reset header — that wait is used instead. Every call
has a total budget: a retry whose wait would cross it is not made.

Whether a failed call may be tried again at all (`retry_safe`) and when (`RetryPolicy.
next_wait`) is decided here; the one loop that applies it, for plain HTTP calls and SDK
calls alike, is `providers.call.Call.attempt`.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Failures that prove the vendor did nothing: the connection never opened, or our own
# limits refused the attempt before anything was sent.
NOTHING_SENT = frozenset({"connect_failed", "local_concurrency", "outbound_rate_limit"})
# Statuses worth another try: the vendor timed out, was overloaded or failed inside.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4  # first try included
    base: float = 0.2  # seconds; the n-th retry waits up to base * 2**(n-1)
    cap: float = 5.0  # longest jittered wait
    budget: float = 30.0  # whole call, attempts and waits, in seconds
    max_retry_after: float = 30.0  # a vendor asking for longer than this is not waited for

    def backoff(self, retry_number: int) -> float:
        """Full jitter for the n-th retry (1-based)."""
        ceiling = min(self.cap, self.base * (2 ** max(0, retry_number - 1)))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security

    def next_wait(self, attempts: int, elapsed: float, retry_after: float | None) -> float | None:
        """Seconds to wait before another try after `attempts` tries and `elapsed`
        seconds, or None when the policy ends the call: attempts used up, the vendor
        asking for longer than `max_retry_after`, or the wait crossing the budget."""
        if attempts >= self.max_attempts:
            return None
        wait = retry_after if retry_after is not None else self.backoff(attempts)
        if wait > self.max_retry_after or elapsed + wait >= self.budget:
            return None
        return float(wait)


def retry_safe(idempotent: bool, status: int | None, vendor_code: str | None) -> bool:
    """Whether trying a failed call again cannot do its effect twice: the call is
    idempotent (method or idempotency key), nothing was sent, or the vendor refused it
    before processing (429)."""
    return idempotent or status == 429 or vendor_code in NOTHING_SENT


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str) -> float | None:
    """'1s', '6m0s', '20ms', '1.5' -> seconds (OpenAI style reset headers and plain numbers)."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _reset_value(value: str, now: float) -> float | None:
    seconds = _duration(value)
    if seconds is None:
        return None
    if seconds > 1_000_000_000:  # an epoch timestamp rather than a delta
        seconds -= now
    return seconds


def parse_retry_after(
    headers: Mapping[str, str], status: int | None = None, now: float | None = None
) -> float | None:
    """Seconds the vendor asks us to wait, or None when it does not say.

    `Retry-After` first (delta seconds or HTTP date); on a 429 also the rate-limit
    reset headers (`RateLimit-Reset`, `X-RateLimit-Reset`, OpenAI's
    `x-ratelimit-reset-requests` / `-tokens`), the latest of them.
    """
    now = time.time() if now is None else now
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = math.nan
        if not math.isnan(seconds) and not math.isinf(seconds):
            return max(0.0, seconds)
    if status != 429:
        return None
    waits = []
    for name in (
        "RateLimit-Reset",
        "X-RateLimit-Reset",
        "X-RateLimit-Reset-Requests",
        "X-RateLimit-Reset-Tokens",
    ):
        raw = headers.get(name) or headers.get(name.lower())
        if raw:
            reset = _reset_value(raw, now)
            if reset is not None and math.isfinite(reset):
                waits.append(max(0.0, reset))
    return max(waits) if waits else None
