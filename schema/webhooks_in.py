"""Incoming webhooks as the API shows them: the inbox of events vendors sent, and the
inbound configurations (sources) they are sent to."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from models.webhooks import InboxStatus
from models.webhooks import WebhookInbox as InboxRow
from models.webhooks import WebhookSource as SourceRow
from resolvers import webhooks_in
from schema.permissions import mutation, query
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    InboxStatus,
    name="WebhookInboxStatus",
    description="Where an incoming event is: RECEIVED (stored, waiting to be processed), "
    "PROCESSED, IGNORED (no handler for its provider and type) or FAILED (its handler kept "
    "failing; see `error`, and `replayWebhookEvent`).",
)
# Incoming --------------------------------------------------------------------------------


@strawberry.type(
    description="An incoming webhook event, stored once it was authenticated and before its "
    "sender got an answer."
)
class WebhookInboxEvent(ModelNode):
    _model: ClassVar[type] = InboxRow
    _permission: ClassVar[str] = "webhooks:inbox"
    id: relay.NodeID[int]
    provider: str = strawberry.field(description="Who sent it (`generic`, `standard`, `stripe`…).")
    event_id: str = strawberry.field(description="The sender's id for the event (dedupe key).")
    event_type: str = strawberry.field(description="The sender's event type.")
    status: InboxStatus = strawberry.field(description="Where the event is.")
    payload: JSON = strawberry.field(description="The event's body as the sender sent it.")
    attempts: int = strawberry.field(description="Times a handler ran for it.")
    error: str | None = strawberry.field(description="Why the last handler run failed.")
    received_at: dt.datetime = strawberry.field(description="When it was stored.")
    processed_at: dt.datetime | None = strawberry.field(
        description="When it was processed or ignored; null until then."
    )

    @classmethod
    def from_row(cls, row: Any) -> WebhookInboxEvent:
        return cls(
            id=row.id,
            provider=row.provider,
            event_id=row.event_id,
            event_type=row.event_type,
            status=InboxStatus(row.status),
            payload=row.payload,
            attempts=row.attempts,
            error=row.error,
            received_at=row.created_at,
            processed_at=row.processed_at,
        )


@strawberry.type(
    description="Where one provider sends this organization's webhooks: "
    "`POST /webhooks/{provider}/{token}`, verified with the source's secret."
)
class WebhookSource(ModelNode):
    _model: ClassVar[type] = SourceRow
    _permission: ClassVar[str] = "webhooks:manage"
    id: relay.NodeID[int]
    provider: str = strawberry.field(description="The provider whose signatures it checks.")
    description: str = strawberry.field(description="What it is for.")
    token_prefix: str = strawberry.field(
        description="The first characters of the URL token, to recognise it."
    )
    created_at: dt.datetime = strawberry.field(description="When it was created.")


@strawberry.input(description="A new inbound webhook configuration.")
class CreateWebhookSourceInput:
    provider: str = strawberry.field(
        description="The provider (`generic`, `standard`, or a vendor with a verifier)."
    )
    secret: str | None = strawberry.field(
        default=None,
        description="The signing secret the vendor gave you; leave empty to have one "
        "generated (a `whsec_…` secret, returned once). For `sendgrid`, required: the Event "
        "Webhook's public verification key (base64 DER, as SendGrid shows it).",
    )
    description: str | None = strawberry.field(
        default=None, description="What it is for (at most 300 characters)."
    )


@strawberry.type(description="The new inbound configuration and where to point the vendor.")
class CreateWebhookSourcePayload:
    source: WebhookSource = strawberry.field(description="The configuration.")
    url: str = strawberry.field(
        description="The URL to give the vendor, shown this once (its token is stored hashed)."
    )
    secret: str | None = strawberry.field(
        description="The generated secret, shown this once; null when you gave one."
    )


@strawberry.input(description="The inbound configuration to delete.")
class DeleteWebhookSourceInput:
    id: relay.GlobalID = strawberry.field(description="Id of the webhook source.")


@strawberry.type(description="What was deleted.")
class DeleteWebhookSourcePayload:
    deleted_id: relay.GlobalID = strawberry.field(description="Id of the deleted source.")


@strawberry.input(description="The incoming event to process again.")
class ReplayWebhookEventInput:
    id: relay.GlobalID = strawberry.field(description="Id of the inbox event.")


@strawberry.type(description="The event, queued to be processed again.")
class ReplayWebhookEventPayload:
    event: WebhookInboxEvent = strawberry.field(description="The event, RECEIVED again.")


@strawberry.type
class Query:
    @query(
        operation=webhooks_in.list_inbox,
        description="Incoming webhook events of the current organization, newest first.",
    )
    async def webhook_inbox(
        self,
        info: Info,
        provider: Annotated[
            str | None, strawberry.argument(description="Only events of this provider.")
        ] = None,
        status: Annotated[
            InboxStatus | None, strawberry.argument(description="Only events in this state.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[WebhookInboxEvent]:
        page = await webhooks_in.list_inbox(
            info.context,
            provider=provider,
            status=None if status is None else status.value,
            first=first,
            after=after,
        )
        return Connection.of(page, WebhookInboxEvent.from_row)

    @query(
        operation=webhooks_in.list_sources,
        description="Inbound webhook configurations of the current organization.",
    )
    async def webhook_sources(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[WebhookSource]:
        page = await webhooks_in.list_sources(info.context, first=first, after=after)
        return Connection.of(page, WebhookSource.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=webhooks_in.replay_event,
        description="Process a stored incoming event again with its current handler.",
    )
    async def replay_webhook_event(
        self, info: Info, input: ReplayWebhookEventInput
    ) -> ReplayWebhookEventPayload:
        row = await webhooks_in.replay_event(
            info.context, inbox_id=decode_id(input.id, "WebhookInboxEvent")
        )
        return ReplayWebhookEventPayload(event=WebhookInboxEvent.from_row(row))

    @mutation(
        operation=webhooks_in.create_source,
        description="Create an inbound configuration: a URL for a vendor's webhooks and the "
        "secret they are verified with.",
    )
    async def create_webhook_source(
        self, info: Info, input: CreateWebhookSourceInput
    ) -> CreateWebhookSourcePayload:
        created = await webhooks_in.create_source(
            info.context,
            provider=input.provider,
            secret=input.secret,
            description=input.description,
        )
        return CreateWebhookSourcePayload(
            source=WebhookSource.from_row(created.source), url=created.url, secret=created.secret
        )

    @mutation(
        operation=webhooks_in.delete_source,
        description="Delete an inbound configuration; its URL stops accepting webhooks.",
    )
    async def delete_webhook_source(
        self, info: Info, input: DeleteWebhookSourceInput
    ) -> DeleteWebhookSourcePayload:
        deleted = await webhooks_in.delete_source(
            info.context, source_id=decode_id(input.id, "WebhookSource")
        )
        return DeleteWebhookSourcePayload(deleted_id=relay.GlobalID("WebhookSource", str(deleted)))
