"""The event bus: publish a message on a channel, subscribe to channels.

One interface, two backends chosen by a setting: in-process queues by default
(one process), Redis pub/sub when `REDIS_URL` is set (many gateway processes share
one stream). Messages are JSON-able dicts. Delivery is live and best-effort: a
subscriber receives what is published while it is subscribed; durability lives in
the outbox (models/events.py), not here.

Part of kit/: imports no project package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Protocol

log = logging.getLogger("switchboard.events")

# A subscriber that falls this many messages behind is ended with `SubscriberTooSlow`
# (it would otherwise miss messages silently, or grow the process without bound).
SUBSCRIBER_BUFFER = 1000


class SubscriberTooSlow(Exception):
    """Raised to a subscriber that fell more than SUBSCRIBER_BUFFER messages behind."""


class EventBus(Protocol):
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channels: Iterable[str]) -> AsyncGenerator[dict[str, Any], None]: ...

    async def subscriber_count(self, channel: str) -> int: ...

    async def close(self) -> None: ...


class _Subscription:
    def __init__(self, channels: frozenset[str]) -> None:
        self.channels = channels
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self.overflowed = False

    def offer(self, message: dict[str, Any] | None) -> None:
        if message is None:  # closing: make room for the end marker
            while self.queue.full():
                self.queue.get_nowait()
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            if not self.overflowed:
                log.warning("an event subscriber fell behind; ending its stream")
            self.overflowed = True

    async def next(self) -> dict[str, Any] | None:
        message = await self.queue.get()
        if self.overflowed:
            raise SubscriberTooSlow()
        return message


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
                message = await sub.next()
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
    """Redis pub/sub: every gateway process sees every message of the channels it follows.

    One pub/sub connection per process, shared by all of its subscribers: a channel is
    SUBSCRIBEd while at least one local subscriber follows it, and one reader task fans
    messages out to local queues, so a thousand WebSocket subscriptions cost one Redis
    connection, not a thousand.
    """

    def __init__(self, url: str, *, prefix: str = "switchboard") -> None:
        import redis.asyncio as aioredis

        # Channels are namespaced, so deployments (or test runs) sharing a Redis never
        # see each other's messages.
        self._prefix = f"{prefix}:"
        self._redis = aioredis.from_url(url, decode_responses=True)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._subs: set[_Subscription] = set()
        self._refs: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._redis.publish(self._prefix + channel, json.dumps(message, default=str))

    async def subscribe(self, channels: Iterable[str]) -> AsyncGenerator[dict[str, Any], None]:
        wanted = frozenset(channels)
        if not wanted or self._closed:
            return
        sub = _Subscription(wanted)
        self._subs.add(sub)  # before SUBSCRIBE, so nothing published after it is missed
        try:
            await self._follow(wanted)
            while True:
                message = await sub.next()
                if message is None:
                    return
                yield message
        finally:
            self._subs.discard(sub)
            with contextlib.suppress(Exception):
                await self._unfollow(wanted)

    async def _follow(self, channels: frozenset[str]) -> None:
        async with self._lock:
            new = [c for c in channels if not self._refs.get(c)]
            for c in channels:
                self._refs[c] = self._refs.get(c, 0) + 1
            if new:
                await self._pubsub.subscribe(*(self._prefix + c for c in sorted(new)))
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")

    async def _unfollow(self, channels: frozenset[str]) -> None:
        async with self._lock:
            gone = []
            for c in channels:
                left = self._refs.get(c, 0) - 1
                if left > 0:
                    self._refs[c] = left
                else:
                    self._refs.pop(c, None)
                    gone.append(c)
            if gone and not self._closed:
                await self._pubsub.unsubscribe(*(self._prefix + c for c in sorted(gone)))

    async def _read(self) -> None:
        while not self._closed:
            try:
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                raw = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                # redis-py reconnects and re-subscribes on the next read.
                log.warning("event bus: reading from Redis failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if raw is None or raw.get("type") != "message":
                continue
            channel = str(raw["channel"]).removeprefix(self._prefix)
            for sub in list(self._subs):
                if channel in sub.channels:
                    try:
                        sub.offer(json.loads(raw["data"]))  # each subscriber its own copy
                    except ValueError:
                        log.warning("ignored a non-JSON message on %s", channel)
                        break

    async def subscriber_count(self, channel: str) -> int:
        """Processes subscribed to `channel` (PUBSUB NUMSUB; one connection per process)."""
        counts = await self._redis.pubsub_numsub(self._prefix + channel)
        return int(counts[0][1]) if counts else 0

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.offer(None)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        await self._redis.aclose()


def create_bus(redis_url: str = "", *, prefix: str = "switchboard") -> EventBus:
    """Redis pub/sub when a Redis URL is configured, otherwise in-process."""
    return RedisBus(redis_url, prefix=prefix) if redis_url else InProcessBus()
