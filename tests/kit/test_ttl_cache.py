"""kit.ttl_cache: single flight, forget during a read, `usable`, errors not stored."""

from __future__ import annotations

import asyncio

import pytest

from kit.ttl_cache import TTLCache, read_through


async def test_concurrent_misses_share_one_read():
    cache: TTLCache[str, int] = TTLCache()
    calls = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 7

    waiting = [asyncio.ensure_future(read_through(cache, "k", 5, load)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [7] * 20
    assert calls == 1
    assert await read_through(cache, "k", 5, load) == 7 and calls == 1  # now a hit


async def test_a_forget_during_a_read_sends_later_callers_to_the_store():
    cache: TTLCache[tuple[int, str], str] = TTLCache()
    gate = asyncio.Event()
    values = iter(["old", "new"])

    async def load() -> str:
        value = next(values)
        if value == "old":
            await gate.wait()
        return value

    first = asyncio.ensure_future(read_through(cache, (1, "openai"), 5, load))
    await asyncio.sleep(0)
    cache.forget_where(lambda key: key[0] == 1)  # a write lands while "old" is read
    assert await read_through(cache, (1, "openai"), 5, load) == "new"
    gate.set()
    assert await first == "old"  # the caller that was already waiting keeps its read
    assert cache.get((1, "openai"), 0) == "new"


async def test_usable_refuses_a_cached_value_and_errors_are_not_stored():
    cache: TTLCache[int, list[int]] = TTLCache()
    reads = 0

    async def load() -> list[int]:
        nonlocal reads
        reads += 1
        return [10, 10]  # at the quota

    for _ in range(3):
        assert await read_through(cache, 1, 5, load, usable=lambda s: s[0] < s[1]) == [10, 10]
    assert reads == 3

    async def failing() -> int:
        raise LookupError("not configured")

    numbers: TTLCache[int, int] = TTLCache()
    with pytest.raises(LookupError):
        await read_through(numbers, 1, 5, failing)
    assert len(numbers) == 0
