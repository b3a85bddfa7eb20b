"""The event bus (kit/bus.py) on its own: in-process and over Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kit.bus import (
    SUBSCRIBER_BUFFER,
    EventBus,
    InProcessBus,
    RedisBus,
    SubscriberTooSlow,
    create_bus,
)
from tests.conftest import eventually


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[EventBus]:
    b = create_bus(
        redis_url if request.param == "redis" else "", prefix=f"bustest-{uuid.uuid4().hex[:6]}"
    )
    yield b
    await b.close()


async def until(condition: Any, limit: float = 10) -> None:
    await eventually(condition, "the bus delivers", limit)


async def test_many_subscribers_each_get_their_own_copy(bus: EventBus) -> None:
    received: list[list[dict[str, Any]]] = [[] for _ in range(50)]

    async def listen(i: int) -> None:
        async for message in bus.subscribe(["a", "b"]):
            message["seen_by"] = i  # mutating a copy affects no one else
            received[i].append(message)
            if len(received[i]) == 2:
                return

    tasks = [asyncio.create_task(listen(i)) for i in range(50)]

    async def all_subscribed() -> bool:
        if isinstance(bus, InProcessBus):
            return await bus.subscriber_count("a") == 50
        return await bus.subscriber_count("a") >= 1 and await bus.subscriber_count("b") >= 1

    # Redis: every local subscriber registers before the shared SUBSCRIBE is sent, so one
    # subscribed process means all fifty will hear what follows.
    await until(all_subscribed)
    await bus.publish("other", {"n": 0})
    await bus.publish("a", {"n": 1})
    await bus.publish("b", {"n": 2})
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for i, got in enumerate(received):
        assert got == [{"n": 1, "seen_by": i}, {"n": 2, "seen_by": i}]


async def test_redis_bus_shares_one_connection_and_unsubscribes(redis_url: str) -> None:
    bus = RedisBus(redis_url, prefix=f"bustest-{uuid.uuid4().hex[:6]}")
    try:
        streams = [bus.subscribe(["only"]) for _ in range(20)]
        firsts = [asyncio.create_task(s.__anext__()) for s in streams]

        async def subscribed() -> bool:
            return await bus.subscriber_count("only") == 1

        await until(subscribed)  # 20 local subscribers, one Redis subscription
        await bus.publish("only", {"x": 1})
        assert [m["x"] for m in await asyncio.gather(*firsts)] == [1] * 20
        for s in streams:
            await s.aclose()

        async def unsubscribed() -> bool:
            return await bus.subscriber_count("only") == 0

        await until(unsubscribed)
    finally:
        await bus.close()


async def test_close_ends_subscriptions(bus: EventBus) -> None:
    got: list[dict[str, Any]] = []

    async def listen() -> None:
        async for message in bus.subscribe(["c"]):
            got.append(message)

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.05)
    await bus.close()
    await asyncio.wait_for(task, 5)  # ends instead of hanging
    assert got == []


async def test_a_subscriber_that_falls_behind_is_told_not_silently_skipped(bus: EventBus) -> None:
    stream = bus.subscribe(["d"])
    first = asyncio.create_task(stream.__anext__())

    async def subscribed() -> bool:
        return await bus.subscriber_count("d") >= 1

    await until(subscribed)
    for n in range(SUBSCRIBER_BUFFER + 2):  # one is taken by the waiting read
        await bus.publish("d", {"n": n})
    try:
        await asyncio.wait_for(first, 10)  # delivered, or already too far behind
    except SubscriberTooSlow:
        await stream.aclose()
        return

    async def overflowed() -> bool:
        try:
            await asyncio.wait_for(stream.__anext__(), 0.5)
        except SubscriberTooSlow:
            return True
        except TimeoutError:
            return False
        return False

    await until(overflowed, limit=30)
    await stream.aclose()
