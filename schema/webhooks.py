"""Webhooks: the inbox of incoming events, inbound configurations, and outgoing endpoints
with their deliveries and attempts."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from kit.errors import NotFound
from models.webhooks import DeliveryStatus, InboxStatus
from models.webhooks import WebhookAttempt as AttemptRow
from models.webhooks import WebhookDelivery as DeliveryRow
from models.webhooks import WebhookEndpoint as EndpointRow
from models.webhooks import WebhookInbox as InboxRow
from models.webhooks import WebhookSource as SourceRow
from resolvers import webhooks_in, webhooks_out
from schema.permissions import mutation, query
from schema.relay import Connection, ModelNode, decode_id

First = Annotated[
    int | None, strawberry.argument(description="Page size (default 20, at most the maximum).")
]
After = Annotated[
    str | None, strawberry.argument(description="Cursor after which the page starts.")
]

strawberry.enum(
    InboxStatus,
    name="WebhookInboxStatus",
    description="Where an incoming event is: RECEIVED (stored, waiting to be processed), "
    "PROCESSED, IGNORED (no handler for its provider and type) or FAILED (its handler kept "
    "failing; see `error`, and `replayWebhookEvent`).",
)
strawberry.enum(
    DeliveryStatus,
    name="WebhookDeliveryStatus",
    description="Where an outgoing message is: PENDING (more attempts to come), SUCCEEDED "
    "(a 2xx came back) or FAILED (out of attempts, 410 Gone, or the endpoint was disabled).",
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
        "generated (a `whsec_…` secret, returned once).",
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


# Outgoing --------------------------------------------------------------------------------


@strawberry.type(
    description="A receiver of this organization's events, signed per Standard Webhooks "
    "(`webhook-id`, `webhook-timestamp`, `webhook-signature`)."
)
class WebhookEndpoint(ModelNode):
    _model: ClassVar[type] = EndpointRow
    _permission: ClassVar[str] = "webhooks:manage"
    id: relay.NodeID[int]
    url: str = strawberry.field(description="Where events are POSTed.")
    description: str = strawberry.field(description="What it is for.")
    event_types: list[str] = strawberry.field(
        description="Event types it receives (globs like `contact.*`); empty means all."
    )
    enabled: bool = strawberry.field(description="False once disabled (by hand, 410, failures).")
    disabled_at: dt.datetime | None = strawberry.field(description="When it was disabled.")
    disabled_reason: str | None = strawberry.field(description="Why it was disabled.")
    failing_since: dt.datetime | None = strawberry.field(
        description="First failure since the last success; after 5 days it is disabled."
    )
    last_success_at: dt.datetime | None = strawberry.field(description="Last 2xx answer.")
    secret_rotated_at: dt.datetime | None = strawberry.field(
        description="Last secret rotation; the old secret also signs for 24 h after it."
    )
    created_at: dt.datetime = strawberry.field(description="When it was created.")


@strawberry.type(description="One try to deliver a message.")
class WebhookAttempt(ModelNode):
    _model: ClassVar[type] = AttemptRow
    _permission: ClassVar[str] = "webhooks:manage"
    id: relay.NodeID[int]
    number: int = strawberry.field(description="1 for the first attempt of the delivery.")
    status_code: int | None = strawberry.field(description="HTTP status; null if none came.")
    duration_ms: int | None = strawberry.field(description="How long it took.")
    response_body: str | None = strawberry.field(description="The first 2 KB of the response body.")
    error: str | None = strawberry.field(description="What went wrong (non-2xx, timeout…).")
    manual: bool = strawberry.field(description="Started by a resend or a test.")
    started_at: dt.datetime = strawberry.field(description="When it started.")
    finished_at: dt.datetime | None = strawberry.field(
        description="When it ended; null while in flight."
    )

    @classmethod
    def from_row(cls, row: Any) -> WebhookAttempt:
        return cls(
            id=row.id,
            number=row.number,
            status_code=row.status_code,
            duration_ms=row.duration_ms,
            response_body=row.response_body,
            error=row.error,
            manual=row.manual,
            started_at=row.created_at,
            finished_at=row.finished_at,
        )


@strawberry.type(description="One message to one endpoint, with its attempts.")
class WebhookDelivery(ModelNode):
    _model: ClassVar[type] = DeliveryRow
    _permission: ClassVar[str] = "webhooks:manage"
    id: relay.NodeID[int]
    event_type: str = strawberry.field(description="The event type (`webhook.test` for tests).")
    message_id: str = strawberry.field(
        description="The `webhook-id` header: the same on every attempt; receivers dedupe on it."
    )
    status: DeliveryStatus = strawberry.field(description="Where the delivery is.")
    attempt_count: int = strawberry.field(description="Attempts in the current round.")
    next_attempt_at: dt.datetime | None = strawberry.field(
        description="When the next attempt is due; null when none is."
    )
    last_status_code: int | None = strawberry.field(description="Status of the last attempt.")
    last_error: str | None = strawberry.field(description="Error of the last attempt.")
    delivered_at: dt.datetime | None = strawberry.field(description="When a 2xx came back.")
    body: str = strawberry.field(description="The JSON body sent (type, timestamp, data).")
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    _endpoint_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Any) -> WebhookDelivery:
        return cls(
            id=row.id,
            event_type=row.event_type,
            message_id=row.message_id,
            status=DeliveryStatus(row.status),
            attempt_count=row.attempt_count,
            next_attempt_at=row.next_attempt_at,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            delivered_at=row.delivered_at,
            body=row.body,
            created_at=row.created_at,
            _endpoint_id=row.endpoint_id,
        )

    @strawberry.field(description="The endpoint it goes to.")
    async def endpoint(self, info: Info) -> WebhookEndpoint:
        ctx = info.context

        async def batch(ids: list[int]) -> list[Any]:
            found = await webhooks_out.load_endpoints(ctx, ids)
            return [found.get(i) for i in ids]

        row = await ctx.loader("webhook_endpoints", batch).load(self._endpoint_id)
        if row is None:  # deliveries are deleted with their endpoint
            raise NotFound("Webhook endpoint not found.")
        return WebhookEndpoint.from_row(row)

    @strawberry.field(description="Its attempts, newest first.")
    async def attempts(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[WebhookAttempt]:
        page = await webhooks_out.list_attempts(
            info.context, delivery_id=self.id, first=first, after=after
        )
        return Connection.of(page, WebhookAttempt.from_row)


@strawberry.input(description="A new webhook endpoint.")
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="Where to POST (https in production; private addresses are refused)."
    )
    event_types: list[str] = strawberry.field(
        default_factory=list,
        description="Event types to receive (globs like `contact.*`); empty means all.",
    )
    description: str | None = strawberry.field(
        default=None, description="What it is for (at most 300 characters)."
    )


@strawberry.type(description="The endpoint and its signing secret.")
class WebhookEndpointSecretPayload:
    endpoint: WebhookEndpoint = strawberry.field(description="The endpoint.")
    secret: str = strawberry.field(
        description="The signing secret (`whsec_…`), shown this once; store it now."
    )


@strawberry.input(description="Changes to a webhook endpoint; omitted fields stay.")
class UpdateWebhookEndpointInput:
    id: relay.GlobalID = strawberry.field(description="Id of the endpoint.")
    url: str | None = strawberry.field(default=None, description="New URL.")
    event_types: list[str] | None = strawberry.field(
        default=None, description="New event types (empty list: all)."
    )
    description: str | None = strawberry.field(default=None, description="New description.")


@strawberry.input(description="The endpoint to act on.")
class WebhookEndpointInput:
    id: relay.GlobalID = strawberry.field(description="Id of the endpoint.")


@strawberry.type(description="The endpoint after the change.")
class WebhookEndpointPayload:
    endpoint: WebhookEndpoint = strawberry.field(description="The endpoint.")


@strawberry.type(description="What was deleted.")
class DeleteWebhookEndpointPayload:
    deleted_id: relay.GlobalID = strawberry.field(
        description="Id of the deleted endpoint (its deliveries went with it)."
    )


@strawberry.input(description="The delivery to send again.")
class ResendWebhookDeliveryInput:
    id: relay.GlobalID = strawberry.field(description="Id of the delivery.")


@strawberry.type(description="The delivery, queued again.")
class WebhookDeliveryPayload:
    delivery: WebhookDelivery = strawberry.field(description="The delivery, PENDING.")


def _endpoint_id(gid: relay.GlobalID) -> int:
    return decode_id(gid, "WebhookEndpoint")


@strawberry.type
class Query:
    @query(
        permission="webhooks:inbox",
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
        permission="webhooks:manage",
        description="Inbound webhook configurations of the current organization.",
    )
    async def webhook_sources(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[WebhookSource]:
        page = await webhooks_in.list_sources(info.context, first=first, after=after)
        return Connection.of(page, WebhookSource.from_row)

    @query(
        permission="webhooks:manage",
        description="Webhook endpoints of the current organization, newest first.",
    )
    async def webhook_endpoints(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[WebhookEndpoint]:
        page = await webhooks_out.list_endpoints(info.context, first=first, after=after)
        return Connection.of(page, WebhookEndpoint.from_row)

    @query(
        permission="webhooks:manage",
        description="Outgoing webhook deliveries, newest first.",
    )
    async def webhook_deliveries(
        self,
        info: Info,
        endpoint_id: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only deliveries to this endpoint."),
        ] = None,
        status: Annotated[
            DeliveryStatus | None,
            strawberry.argument(description="Only deliveries in this state."),
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[WebhookDelivery]:
        page = await webhooks_out.list_deliveries(
            info.context,
            endpoint_id=None if endpoint_id is None else _endpoint_id(endpoint_id),
            status=None if status is None else status.value,
            first=first,
            after=after,
        )
        return Connection.of(page, WebhookDelivery.from_row)


@strawberry.type
class Mutation:
    @mutation(
        permission="webhooks:inbox",
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
        permission="webhooks:manage",
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
        permission="webhooks:manage",
        description="Delete an inbound configuration; its URL stops accepting webhooks.",
    )
    async def delete_webhook_source(
        self, info: Info, input: DeleteWebhookSourceInput
    ) -> DeleteWebhookSourcePayload:
        deleted = await webhooks_in.delete_source(
            info.context, source_id=decode_id(input.id, "WebhookSource")
        )
        return DeleteWebhookSourcePayload(deleted_id=relay.GlobalID("WebhookSource", str(deleted)))

    @mutation(
        permission="webhooks:manage",
        description="Create a webhook endpoint; its signing secret is in the answer once.",
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> WebhookEndpointSecretPayload:
        created = await webhooks_out.create_endpoint(
            info.context,
            url=input.url,
            event_types=input.event_types,
            description=input.description,
        )
        return WebhookEndpointSecretPayload(
            endpoint=WebhookEndpoint.from_row(created.endpoint), secret=created.secret
        )

    @mutation(permission="webhooks:manage", description="Change a webhook endpoint.")
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        row = await webhooks_out.update_endpoint(
            info.context,
            endpoint_id=_endpoint_id(input.id),
            url=input.url,
            event_types=input.event_types,
            description=input.description,
        )
        return WebhookEndpointPayload(endpoint=WebhookEndpoint.from_row(row))

    @mutation(
        permission="webhooks:manage",
        description="Stop sending to an endpoint; pending deliveries to it fail.",
    )
    async def disable_webhook_endpoint(
        self, info: Info, input: WebhookEndpointInput
    ) -> WebhookEndpointPayload:
        row = await webhooks_out.set_endpoint_enabled(
            info.context, endpoint_id=_endpoint_id(input.id), enabled=False
        )
        return WebhookEndpointPayload(endpoint=WebhookEndpoint.from_row(row))

    @mutation(
        permission="webhooks:manage",
        description="Send to an endpoint again (also after an automatic disable).",
    )
    async def enable_webhook_endpoint(
        self, info: Info, input: WebhookEndpointInput
    ) -> WebhookEndpointPayload:
        row = await webhooks_out.set_endpoint_enabled(
            info.context, endpoint_id=_endpoint_id(input.id), enabled=True
        )
        return WebhookEndpointPayload(endpoint=WebhookEndpoint.from_row(row))

    @mutation(
        permission="webhooks:manage",
        description="Delete a webhook endpoint with its deliveries.",
    )
    async def delete_webhook_endpoint(
        self, info: Info, input: WebhookEndpointInput
    ) -> DeleteWebhookEndpointPayload:
        deleted = await webhooks_out.delete_endpoint(
            info.context, endpoint_id=_endpoint_id(input.id)
        )
        return DeleteWebhookEndpointPayload(
            deleted_id=relay.GlobalID("WebhookEndpoint", str(deleted))
        )

    @mutation(
        permission="webhooks:manage",
        description="Give an endpoint a new signing secret (returned once); for 24 h both "
        "the old and the new secret sign each message.",
    )
    async def rotate_webhook_secret(
        self, info: Info, input: WebhookEndpointInput
    ) -> WebhookEndpointSecretPayload:
        rotated = await webhooks_out.rotate_secret(info.context, endpoint_id=_endpoint_id(input.id))
        return WebhookEndpointSecretPayload(
            endpoint=WebhookEndpoint.from_row(rotated.endpoint), secret=rotated.secret
        )

    @mutation(
        permission="webhooks:manage",
        description="Send a `webhook.test` message to an endpoint now.",
    )
    async def send_test_webhook(
        self, info: Info, input: WebhookEndpointInput
    ) -> WebhookDeliveryPayload:
        row = await webhooks_out.send_test(info.context, endpoint_id=_endpoint_id(input.id))
        return WebhookDeliveryPayload(delivery=WebhookDelivery.from_row(row))

    @mutation(
        permission="webhooks:manage",
        description="Send a delivery again (same body and `webhook-id`), with a new round of "
        "attempts.",
    )
    async def resend_webhook_delivery(
        self, info: Info, input: ResendWebhookDeliveryInput
    ) -> WebhookDeliveryPayload:
        row = await webhooks_out.resend_delivery(
            info.context, delivery_id=decode_id(input.id, "WebhookDelivery")
        )
        return WebhookDeliveryPayload(delivery=WebhookDelivery.from_row(row))
