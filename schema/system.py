"""The gateway itself: version and environment, and a subscription heartbeat."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry
from strawberry.types import Info

from resolvers import system
from schema.permissions import PUBLIC, query, subscription


@strawberry.type(description="What this gateway runs.")
class ServerInfo:
    version: str = strawberry.field(description="Gateway release.")
    environment: str = strawberry.field(
        description="`development`, `test` or `production` (SWITCHBOARD_ENV)."
    )
    server_time: dt.datetime = strawberry.field(description="The server's clock, UTC.")


@strawberry.type(description="One beat of the heartbeat subscription.")
class Heartbeat:
    sequence: int = strawberry.field(
        description="1 for the first beat, then +1 per beat; a gap means beats were lost."
    )
    server_time: dt.datetime = strawberry.field(description="When the beat left, UTC.")


@strawberry.type
class Query:
    @query(permission=PUBLIC, description="Version, environment and clock of the gateway.")
    def server_info(self, info: Info) -> ServerInfo:
        r = system.server_info(info.context)
        return ServerInfo(version=r.version, environment=r.environment, server_time=r.server_time)


@strawberry.type
class Subscription:
    @subscription(
        operation=system.heartbeat,
        description="A beat at once and then every `intervalSeconds`: keeps an idle "
        "WebSocket alive through proxies and lets a client notice a stale stream.",
    )
    async def heartbeat(
        self,
        info: Info,
        interval_seconds: Annotated[
            int, strawberry.argument(description="Seconds between beats, 1 to 300.")
        ] = 15,
    ) -> AsyncGenerator[Heartbeat, None]:
        async for beat in system.heartbeat(info.context, interval_seconds):
            yield Heartbeat(sequence=beat.sequence, server_time=beat.server_time)
