"""A small least-recently-used memo for per-document work (validation, cache policy).

`functools.lru_cache` hashes its arguments on every call; the keys here hold the query
text rather than the parsed document, whose nodes hash their whole tree every time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    """key -> value, computed once; at most `size` entries, the least recently used
    going first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        try:
            self._entries.move_to_end(key)
            return self._entries[key]
        except KeyError:
            pass
        value = compute()
        if len(self._entries) >= self.size:
            self._entries.popitem(last=False)
        self._entries[key] = value
        return value

    def peek(self, key: Hashable) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self.size:
            self._entries.popitem(last=False)
        self._entries[key] = value

    def clear(self) -> None:
        self._entries.clear()
