"""The activity stream: the current organization's domain events, live."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from resolvers import events
from schema.permissions import subscription


@strawberry.type(description="Something that happened in the organization.")
class ActivityEvent:
    id: strawberry.ID = strawberry.field(
        description="Event id; the same event delivered twice has the same id."
    )
    type: str = strawberry.field(
        description="What happened, `area.verb_past`: `contact.created`, `member.joined`…"
    )
    data: JSON = strawberry.field(description="Details of the event; its shape depends on type.")
    occurred_at: dt.datetime = strawberry.field(description="When the change was committed.")


@strawberry.type
class Subscription:
    @subscription(
        permission="activity:read",
        description="Domain events of the current organization as they happen (from every "
        "gateway process), optionally only some types. Never another organization's.",
    )
    async def activity(
        self,
        info: Info,
        types: Annotated[
            list[str] | None,
            strawberry.argument(
                description="Event types to receive; `*` matches any part (`contact.*`). "
                "Default: all."
            ),
        ] = None,
    ) -> AsyncGenerator[ActivityEvent, None]:
        async for event in events.activity(info.context, types):
            yield ActivityEvent(
                id=strawberry.ID(str(event.id)),
                type=event.type,
                data=event.data,  # type: ignore[arg-type]  # JSON scalar takes any JSON value
                occurred_at=event.occurred_at,
            )
