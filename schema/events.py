"""Domain events, as the API shows them: the `activity` subscription streams the current
organization's events live (resolvers/events.py keeps the outbox and relay, kit/bus.py the
transport)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from resolvers import events
from schema.permissions import subscription
from schema.relay import encode_id

# Ids inside event data, as the rest of the API shows them: global ids (`node(id:)`).
ID_TYPES = {
    "contact_id": "Contact",
    "lead_id": "Lead",
    "task_id": "Task",
    "member_id": "Member",
    "invitation_id": "Invitation",
    "user_id": "User",
    "job_id": "Job",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def public_data(data: dict[str, Any]) -> dict[str, Any]:
    """Event data in the API's conventions: camelCase keys, global ids."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        type_name = ID_TYPES.get(key)
        if type_name and isinstance(value, int) and not isinstance(value, bool):
            value = str(encode_id(type_name, value))
        out[_camel(key)] = value
    return out


@strawberry.type(description="Something that happened in the organization.")
class ActivityEvent:
    id: strawberry.ID = strawberry.field(
        description="Event id; the same event delivered twice has the same id."
    )
    type: str = strawberry.field(
        description="What happened, `area.verb_past`: `contact.created`, `member.joined`…"
    )
    data: JSON = strawberry.field(
        description="Details of the event; its shape depends on type. Keys are camelCase "
        "and ids are global ids (`id`, `userId`…), usable with `node(id:)`."
    )
    occurred_at: dt.datetime = strawberry.field(description="When the change was committed.")


@strawberry.type
class Subscription:
    # Shared: every field below depends on the tenant only; the per-user access check is
    # made on each subscriber through ctx.audience (resolvers/events.py `activity`).
    @subscription(
        shared=True,
        operation=events.activity,
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
                data=public_data(event.data),  # type: ignore[arg-type]  # JSON scalar takes any JSON value
                occurred_at=event.occurred_at,
            )
