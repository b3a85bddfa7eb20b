"""Least-recently-used memos for per-document work (validation, cost, cache policy).

`cachetools.LRUCache` with one addition, `compute`: the value of a key, computed once.
Keys hold the query text rather than the parsed document, whose nodes hash their whole
tree on every call; a str caches its hash.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from cachetools import LRUCache

V = TypeVar("V")


class Memo(LRUCache[Hashable, V]):
    def compute(self, key: Hashable, fn: Callable[[], V]) -> V:
        try:
            return self[key]
        except KeyError:
            value = fn()
            self[key] = value
            return value
