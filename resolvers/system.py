"""The gateway itself: what it runs, and a heartbeat for idle subscription sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import metadata

from kit.errors import require
from resolvers.context import Context
from resolvers.operations import SIGNED_IN, operation

HEARTBEAT_MIN_SECONDS = 1
HEARTBEAT_MAX_SECONDS = 300


def _version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"


VERSION = _version()


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version: str
    environment: str
    server_time: dt.datetime


@dataclass(frozen=True, slots=True)
class Beat:
    sequence: int
    server_time: dt.datetime


def server_info(ctx: Context) -> ServerInfo:
    return ServerInfo(
        version=VERSION,
        environment=ctx.settings.switchboard_env.value,
        server_time=dt.datetime.now(dt.UTC),
    )


@operation(SIGNED_IN)
async def heartbeat(ctx: Context, interval_seconds: int) -> AsyncIterator[Beat]:
    """One beat at once, then one every `interval_seconds`, until the client completes.

    A front end keeps an idle socket alive through proxies with it, and knows the
    stream is stale when beats stop arriving.
    """
    ctx.require_principal()
    require(
        HEARTBEAT_MIN_SECONDS <= interval_seconds <= HEARTBEAT_MAX_SECONDS,
        "intervalSeconds",
        f"must be between {HEARTBEAT_MIN_SECONDS} and {HEARTBEAT_MAX_SECONDS}",
    )
    sequence = 0
    while True:
        sequence += 1
        yield Beat(sequence=sequence, server_time=dt.datetime.now(dt.UTC))
        await asyncio.sleep(interval_seconds)
