"""Signed webhook callbacks from a sandbox, as the vendor sends them after a send.

A sandbox that emulates a vendor with delivery webhooks (Resend, SendGrid) holds one
`Callbacks`. Once `configure(url)` gave it a receiver, `schedule(requests)` posts the
requests in order from a background task (the send's answer never waits for them), each
`delay` seconds after the previous one, over real HTTP with aiohttp. A request is built
(and so signed, with its timestamp) just before it is posted, as the vendor does; a
receiver that fails (no answer, 5xx, 429) is tried again a few times with a short
backoff, then the request is given up, as vendors eventually do.

Every attempt is recorded (`deliveries`: url, headers, body, status or error) for tests,
and listed at the sandbox's `GET /_sandbox/webhooks`; `drain()` waits for the posts in
flight. The receiver URL is set only from Python (the gateway's mount from settings, or a
test): never through an unauthenticated control endpoint, which would let anyone make the
gateway post to an address of their choosing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger("switchboard.sandbox.callbacks")

MAX_RECORDED = 1000
ATTEMPTS = 4  # per request: the first post and three retries
RETRY_BASE = 0.2  # seconds, doubled per retry
TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=3.0)


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """One signed POST: the exact body bytes and the headers that sign them."""

    body: bytes
    headers: dict[str, str]


# Builds the request at posting time (so the signature's timestamp is the post's).
RequestBuilder = Callable[[], CallbackRequest]


class Callbacks:
    """Where a sandbox posts its webhooks, and the posts in flight."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.url: str | None = None
        self.delay = 0.05  # seconds between two requests of one send (events in order)
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def configure(self, url: str | None, *, delay: float | None = None) -> None:
        """Post to `url` from now on (None: post nothing)."""
        self.url = url or None
        if delay is not None:
            self.delay = max(0.0, delay)

    def schedule(self, requests: Sequence[RequestBuilder]) -> None:
        """Post `requests` in order from a background task (nothing when no URL is set)."""
        url = self.url
        if url is None or not requests:
            return
        task = asyncio.get_running_loop().create_task(
            self._post_all(url, list(requests)), name=f"sandbox-{self.provider}-webhooks"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def schedule_to(self, url: str, requests: Sequence[RequestBuilder]) -> None:
        """Post `requests` in order to `url` (a vendor that takes the receiver with each
        call, as Twilio's `StatusCallback`); the caller checks that `url` may be posted to."""
        if not requests:
            return
        task = asyncio.get_running_loop().create_task(
            self._post_all(url, list(requests)), name=f"sandbox-{self.provider}-callbacks"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every scheduled request was posted (or given up); bound it with
        `asyncio.timeout` when needed."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        """Stop posting: cancel what is in flight (the app's shutdown)."""
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def recorded(self) -> list[dict[str, Any]]:
        return list(self.deliveries)

    # Posting ---------------------------------------------------------------------------

    async def _post_all(self, url: str, requests: list[RequestBuilder]) -> None:
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                for builder in requests:
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    await self._post(session, url, builder)
        except Exception:  # a sandbox's background task must never die loudly
            log.exception("%s sandbox webhooks failed", self.provider)

    async def _post(self, session: aiohttp.ClientSession, url: str, build: RequestBuilder) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            request = build()  # signed now: a retry carries a fresh timestamp, as vendors do
            entry: dict[str, Any] = {
                "url": url,
                "attempt": attempt,
                "headers": dict(request.headers),
                "body": _parsed(request.body),
                "at": time.time(),
                "status": None,
                "error": None,
            }
            self.deliveries.append(entry)
            try:
                async with session.post(url, data=request.body, headers=request.headers) as resp:
                    await resp.read()
                    entry["status"] = resp.status
                    if resp.status < 300:
                        return
                    retry = resp.status in (408, 429) or resp.status >= 500
            except (aiohttp.ClientError, TimeoutError) as exc:
                entry["error"] = type(exc).__name__
                retry = True
            if not retry:
                log.warning(
                    "%s sandbox webhook refused by the receiver: %s",
                    self.provider,
                    entry["status"],
                )
                return
            if attempt < ATTEMPTS:
                await asyncio.sleep(RETRY_BASE * 2 ** (attempt - 1))
        log.warning("%s sandbox webhook given up after %d attempts", self.provider, ATTEMPTS)


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
