"""Outgoing webhooks as the API shows them: endpoints, and the deliveries with their
attempts."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from kit.errors import NotFound
from models.webhooks import DeliveryStatus
from models.webhooks import WebhookAttempt as AttemptRow
from models.webhooks import WebhookDelivery as DeliveryRow
from models.webhooks import WebhookEndpoint as EndpointRow
from resolvers import webhooks_out
from schema.permissions import mutation, query
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    DeliveryStatus,
    name="WebhookDeliveryStatus",
    description="Where an outgoing message is: PENDING (more attempts to come), SUCCEEDED "
    "(a 2xx came back) or FAILED (out of attempts, 410 Gone, or the endpoint was disabled).",
)


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
        operation=webhooks_out.list_endpoints,
        description="Webhook endpoints of the current organization, newest first.",
    )
    async def webhook_endpoints(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[WebhookEndpoint]:
        page = await webhooks_out.list_endpoints(info.context, first=first, after=after)
        return Connection.of(page, WebhookEndpoint.from_row)

    @query(
        operation=webhooks_out.list_deliveries,
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
        operation=webhooks_out.create_endpoint,
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

    @mutation(operation=webhooks_out.update_endpoint, description="Change a webhook endpoint.")
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
        operation=webhooks_out.set_endpoint_enabled,
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
        operation=webhooks_out.set_endpoint_enabled,
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
        operation=webhooks_out.delete_endpoint,
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
        operation=webhooks_out.rotate_secret,
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
        operation=webhooks_out.send_test,
        description="Send a `webhook.test` message to an endpoint now.",
    )
    async def send_test_webhook(
        self, info: Info, input: WebhookEndpointInput
    ) -> WebhookDeliveryPayload:
        row = await webhooks_out.send_test(info.context, endpoint_id=_endpoint_id(input.id))
        return WebhookDeliveryPayload(delivery=WebhookDelivery.from_row(row))

    @mutation(
        operation=webhooks_out.resend_delivery,
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
