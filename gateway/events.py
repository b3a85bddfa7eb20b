"""The event bus: publish a message on a channel, subscribe to channels.

One interface, two backends chosen by a setting: in-process queues by default
(one process), Redis pub/sub when `REDIS_URL` is set (many gateway processes share
one stream). Messages are JSON-able dicts. Delivery is live and best-effort: a
subscriber receives what is published while it is subscribed; durability lives in
the outbox (models/events.py), not here.

Leaf module: imports nothing above `gateway/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Protocol

log = logging.getLogger("switchboard.events")

# A slow subscriber keeps at most this many messages; older ones are dropped (and logged)
# rather than letting one stalled WebSocket grow the process without bound.
SUBSCRIBER_BUFFER = 1000


class EventBus(Protocol):
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channels: Iterable[str]) -> AsyncGenerator[dict[str, Any], None]: ...

    async def subscriber_count(self, channel: str) -> int: ...

    async def close(self) -> None: ...


class _Subscription:
    def __init__(self, channels: frozenset[str]) -> None:
        self.channels = channels
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_BUFFER)

    def offer(self, message: dict[str, Any] | None) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("event subscriber is too slow; message dropped")


class InProcessBus:
    """Fan-out to subscribers of this process."""

    def __init__(self) -> None:
        self._subs: set[_Subscription] = set()
        self._closed = False

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        # Same isolation as Redis: subscribers get their own copy, never the publisher's dict.
        encoded = json.dumps(message, default=str)
        for sub in list(self._subs):
            if channel in sub.channels:
                sub.offer(json.loads(encoded))

    async def subscribe(self, channels: Iterable[str]) -> AsyncGenerator[dict[str, Any], None]:
        sub = _Subscription(frozenset(channels))
        if self._closed:
            return
        self._subs.add(sub)
        try:
            while True:
                message = await sub.queue.get()
                if message is None:
                    return
                yield message
        finally:
            self._subs.discard(sub)

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.offer(None)
        self._subs.clear()

    async def subscriber_count(self, channel: str) -> int:
        """Subscriptions of this process listening on `channel`."""
        return sum(1 for sub in self._subs if channel in sub.channels)


class RedisBus:
    """Redis pub/sub: every gateway process sees every message of the channels it follows."""

    def __init__(self, url: str, *, prefix: str = "switchboard") -> None:
        import redis.asyncio as aioredis

        # Channels are namespaced, so deployments (or test runs) sharing a Redis never
        # see each other's messages.
        self._prefix = f"{prefix}:"
        self._redis = aioredis.from_url(url, decode_responses=True)
        self._closed = asyncio.Event()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._redis.publish(self._prefix + channel, json.dumps(message, default=str))

    async def subscribe(self, channels: Iterable[str]) -> AsyncGenerator[dict[str, Any], None]:
        names = sorted({self._prefix + c for c in channels})
        if not names or self._closed.is_set():
            return
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*names)
        closed = asyncio.create_task(self._closed.wait())
        try:
            while True:
                getter = asyncio.create_task(pubsub.get_message(timeout=None))
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await getter
                    return
                raw = getter.result()
                if raw is None or raw.get("type") != "message":
                    continue
                try:
                    yield json.loads(raw["data"])
                except ValueError:
                    log.warning("ignored a non-JSON message on %s", raw.get("channel"))
        finally:
            closed.cancel()
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def subscriber_count(self, channel: str) -> int:
        """Subscriptions listening on `channel` across every process (PUBSUB NUMSUB)."""
        counts = await self._redis.pubsub_numsub(self._prefix + channel)
        return int(counts[0][1]) if counts else 0

    async def close(self) -> None:
        self._closed.set()
        await asyncio.sleep(0)
        await self._redis.aclose()


def create_bus(redis_url: str = "", *, prefix: str = "switchboard") -> EventBus:
    """Redis pub/sub when a Redis URL is configured, otherwise in-process."""
    return RedisBus(redis_url, prefix=prefix) if redis_url else InProcessBus()
