"""A private (per-caller) cache of whole GraphQL answers, as a gateway's response cache.

Which operations may be cached, and for how long, comes from the fields' cache hints
(`schema/cache_control.py`); the GraphQL view (`gateway/http/graphql.py`) looks an
answer up before building a context and stores error-free answers after execution.
This module only keeps the entries: a leaf, so the resolvers' write paths can drop
entries without importing the view.

- Keys are chosen by the view: the caller (principal key, tenant, role) and the raw
  request body (query text, operation name, variables — byte for byte).
- Each entry remembers whose it is, so `forget_user` drops every answer of one user
  (their sessions in every tenant and the API keys they created); `forget_all` drops
  everything (for an organization's change: its name shows in the `memberships` of
  people signed in elsewhere).
- A `generation` is bumped by every forget: an answer computed while a write landed is
  not stored afterwards (the view passes the generation it saw before executing).
- Bounded: at most `max_entries` answers (RESPONSE_CACHE_ENTRIES) and `MAX_BYTES` of
  request and answer bodies together, the oldest insert going first; nothing larger
  than `MAX_ENTRY_BYTES` is kept (a caller padding its variables must not fill memory:
  unused variables are allowed, so every padded body is a new key). Expired entries go
  on lookup.

It exists for `bench/bench_me.py` (a cached `me` answers without context, parsing,
validation or execution; target ≥ 0.8× bare Strawberry, figures in bench/README.md), and
tests/transport/test_response_cache.py checks what it may and may not keep.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 10_000
MAX_BYTES = 16 * 1024 * 1024
MAX_ENTRY_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes
    expires_at: float  # time.monotonic()
    user_id: int | None
    operation_name: str | None  # for the metrics of a hit
    size: int  # request body + answer body, for the byte budget


@dataclass(slots=True)
class Pending:
    """A miss on its way through execution: the view sets it in the request's scope
    state, the schema extension fills in the policy when the answer is error-free."""

    key: tuple[Any, ...]  # (principal key, tenant, role, request body)
    generation: int
    started: float  # time.monotonic() before execution: entries age from here
    max_age: float | None = None
    operation_name: str | None = None


class ResponseCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.generation = 0
        self.hits = 0
        self.bytes = 0
        self._entries: dict[Hashable, CachedAnswer] = {}

    def get(self, key: Hashable, now: float) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._remove(key)
            return None
        self.hits += 1
        return entry

    def put(self, key: Hashable, answer: CachedAnswer, generation: int) -> bool:
        """Store unless something was forgotten since `generation` was read."""
        if generation != self.generation or answer.size > MAX_ENTRY_BYTES:
            return False
        entries = self._entries
        self._remove(key)
        while entries and (
            len(entries) >= self.max_entries or self.bytes + answer.size > self.max_bytes
        ):
            self._remove(next(iter(entries)))
        entries[key] = answer
        self.bytes += answer.size
        return True

    def _remove(self, key: Hashable) -> None:
        answer = self._entries.pop(key, None)
        if answer is not None:
            self.bytes -= answer.size

    def forget_user(self, user_id: int) -> None:
        self._drop(lambda a: a.user_id == user_id)

    def forget_all(self) -> None:
        self.generation += 1
        self._entries.clear()
        self.bytes = 0

    def _drop(self, match: Any) -> None:
        # A scan, not an index: writes that forget are rare next to reads, and an index
        # would have to be kept right through eviction and expiry on every read.
        self.generation += 1
        for key in [k for k, a in self._entries.items() if match(a)]:
            self._remove(key)

    def __len__(self) -> int:
        return len(self._entries)
