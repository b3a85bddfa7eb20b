"""Access tokens per credential, shared by every client of a process.

Vendors that hand out short-lived tokens for a long-lived secret (Rossum's login, PayPal's
and Zoom's client-credentials grant, an OAuth refresh token) need the same thing: a token
fetched once and kept until shortly before it expires or until the vendor refuses it, and
one renewal serving every caller that asked meanwhile (single flight), so fifty concurrent
calls with an expired token make one token request, not fifty.

    tokens = TokenCache()
    token = await tokens.token(key, login)                  # login() -> Issued
    token = await tokens.token(key, login, refused=token)   # after a 401 with `token`
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cachetools import LRUCache

MAX_TOKENS = 1024  # tokens kept per process (one per credential)
DEFAULT_MARGIN = 0.1  # renew this share of a token's lifetime before it ends…
MAX_MARGIN = 3600.0  # …but never more than an hour early


@dataclass(frozen=True, slots=True)
class Issued:
    """A token as the vendor issued it, and for how many seconds it is good."""

    value: str = field(repr=False)
    lifetime: float


@dataclass(slots=True)
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: str | None = None
    expires: float = 0.0


class TokenCache:
    """Tokens per credential key, renewed single-flight (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._slots: LRUCache[str, _Slot] = LRUCache(maxsize=MAX_TOKENS)
        self.clock = clock
        self.renewals = 0  # token requests made by this cache (what single flight saves)

    async def token(
        self, key: str, login: Callable[[], Awaitable[Issued]], *, refused: str | None = None
    ) -> str:
        """The live token for `key`, fetching it (once, for all waiters) when there is
        none, it is about to expire, or it is `refused` (the token a call was just
        refused with)."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        if self._usable(slot, refused):
            assert slot.token is not None
            return slot.token
        async with slot.lock:
            if self._usable(slot, refused):  # another caller renewed it while we waited
                assert slot.token is not None
                return slot.token
            issued = await login()
            self.renewals += 1
            margin = min(MAX_MARGIN, issued.lifetime * DEFAULT_MARGIN)
            slot.token, slot.expires = issued.value, self.clock() + issued.lifetime - margin
            return issued.value

    def forget(self, key: str) -> None:
        """Drop `key`'s token (its grant was revoked or its secret changed)."""
        self._slots.pop(key, None)

    def _usable(self, slot: _Slot, refused: str | None) -> bool:
        return slot.token is not None and slot.token != refused and slot.expires > self.clock()
