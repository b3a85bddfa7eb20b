"""Messaging: SMS and WhatsApp (`messages`, `sendSms`, `sendWhatsApp`, `sendBulkSms`, the
`messageStatus` subscription), the opt-out list, and phone verification codes."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from enum import Enum
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from models.messaging import Channel, Direction, MessageStatus, OptOutReason
from models.messaging import Message as MessageRow
from models.messaging import PhoneOptOut as OptOutRow
from models.messaging import SmsBatch as BatchRow
from resolvers import messaging
from schema.permissions import mutation, query, subscription
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    Channel,
    name="MessageChannel",
    description="How a message travels: SMS, WHATSAPP, or EMAIL (a mail reply in the inbox).",
)
strawberry.enum(
    Direction,
    name="MessageDirection",
    description="OUTBOUND (the organization sent it) or INBOUND (a contact sent it).",
)
strawberry.enum(
    MessageStatus,
    description="Where a message is, in this order (it only moves forward): QUEUED (waiting "
    "for its next try), SENDING (a send call is under way, or its outcome is being checked), "
    "ACCEPTED (Twilio took it), SENT (the carrier took it), DELIVERED, READ (WhatsApp), "
    "UNDELIVERED (the carrier could not deliver it), FAILED (refused: a bad or opted-out "
    "number, a bad template, or out of tries); RECEIVED for an incoming message.",
)
strawberry.enum(
    OptOutReason,
    name="PhoneOptOutReason",
    description="Why a number is on the opt-out list: it replied an opt-out keyword "
    "(KEYWORD: STOP, UNSUBSCRIBE…), Twilio refused a send to it as unsubscribed (PROVIDER, "
    "error 21610), or it was added by hand (MANUAL).",
)


@strawberry.type(description="An SMS or WhatsApp message of the current organization.")
class Message(ModelNode):
    _model: ClassVar[type] = MessageRow
    _permission: ClassVar[str] = "messaging:read"
    id: relay.NodeID[int]
    channel: Channel = strawberry.field(description="SMS or WHATSAPP (EMAIL in the inbox).")
    direction: Direction = strawberry.field(description="Sent or received.")
    kind: str = strawberry.field(
        description="What it is: `direct` (`sendSms`, `sendWhatsApp`), `bulk` (`sendBulkSms`), "
        "`verification` (a code; its text is never shown), `reply` (from the inbox) or "
        "`inbound`."
    )
    recipient: str = strawberry.field(
        description="The number it goes to (E.164); for an incoming message, ours."
    )
    sender: str = strawberry.field(
        description="Who sent it: the contact's number for an incoming message; empty for an "
        "outgoing one (the account's sender)."
    )
    body: str = strawberry.field(description="Its text (a template's is Twilio's).")
    media_urls: list[str] = strawberry.field(description="Media it carries (WhatsApp, MMS).")
    content_sid: str | None = strawberry.field(
        description="The approved template it was sent with (an HX… Content SID)."
    )
    status: MessageStatus = strawberry.field(description="Where it is.")
    attempts: int = strawberry.field(description="Tries spent so far.")
    provider: str | None = strawberry.field(
        description="`twilio`, or `twilio-sandbox` when the sandbox took it (nothing reached "
        "a handset); null while queued."
    )
    provider_sid: str | None = strawberry.field(description="Twilio's SID for it (SM…, MM…).")
    error_code: str | None = strawberry.field(
        description="Why it failed: Twilio's error code (21211 invalid number, 21610 "
        "unsubscribed, 30003 unreachable…) or OPTED_OUT."
    )
    last_error: str | None = strawberry.field(description="What went wrong on the last try.")
    segments: int | None = strawberry.field(description="SMS segments Twilio counted.")
    batch_id: strawberry.ID | None = strawberry.field(
        description="The bulk send it belongs to (an `SmsBatch` id)."
    )
    created_at: dt.datetime = strawberry.field(description="When it was queued or received.")
    sent_at: dt.datetime | None = strawberry.field(description="When Twilio took it.")
    delivered_at: dt.datetime | None = strawberry.field(description="When it was delivered.")
    status_changed_at: dt.datetime | None = strawberry.field(
        description="When its status last changed."
    )

    @classmethod
    def from_row(cls, row: Any) -> Message:
        return cls(
            id=row.id,
            channel=Channel(row.channel),
            direction=Direction(row.direction),
            kind=row.kind,
            recipient=row.recipient,
            sender=row.sender,
            body=messaging.shown_body(row),
            media_urls=list(row.media_urls or []),
            content_sid=row.content_sid,
            status=MessageStatus(row.status),
            attempts=row.attempts,
            provider=row.provider,
            provider_sid=row.provider_sid,
            error_code=row.error_code,
            last_error=row.last_error,
            segments=row.segments,
            batch_id=None
            if row.batch_id is None
            else strawberry.ID(str(relay.GlobalID("SmsBatch", str(row.batch_id)))),
            created_at=row.created_at,
            sent_at=row.sent_at,
            delivered_at=row.delivered_at,
            status_changed_at=row.status_changed_at,
        )


@strawberry.type(description="One `sendBulkSms`: its messages are in `messages(batchId:)`.")
class SmsBatch(ModelNode):
    _model: ClassVar[type] = BatchRow
    _permission: ClassVar[str] = "messaging:read"
    id: relay.NodeID[int]
    total: int = strawberry.field(description="Recipients asked for.")
    queued: int = strawberry.field(description="Of them, messages queued.")
    created_at: dt.datetime = strawberry.field(description="When it was sent.")


@strawberry.type(description="A number the organization's messages no longer go to.")
class PhoneOptOut(ModelNode):
    _model: ClassVar[type] = OptOutRow
    _permission: ClassVar[str] = "messaging:opt_outs"
    id: relay.NodeID[int]
    number: str = strawberry.field(description="The number, E.164.")
    reason: OptOutReason = strawberry.field(description="Why.")
    detail: str = strawberry.field(description="What the provider or person said.")
    created_at: dt.datetime = strawberry.field(description="Since when.")

    @classmethod
    def from_row(cls, row: Any) -> PhoneOptOut:
        return cls(
            id=row.id,
            number=row.number,
            reason=OptOutReason(row.reason),
            detail=row.detail,
            created_at=row.created_at,
        )


@strawberry.input(description="One SMS.")
class SendSmsInput:
    to: str = strawberry.field(description="The number, with its country code (E.164).")
    body: str = strawberry.field(description="The text, at most 1,600 characters.")


@strawberry.type(description="The queued message.")
class SendMessagePayload:
    message: Message = strawberry.field(
        description="The message, QUEUED; follow it with `messageStatus`."
    )


@strawberry.input(description="An approved WhatsApp template and its variables.")
class WhatsAppTemplateInput:
    content_sid: str = strawberry.field(description="The template's Content SID (HX…).")
    variables: JSON | None = strawberry.field(
        default=None,
        description='Its variables by placeholder number: {"1": "Monday", "2": "3pm"}.',
    )


@strawberry.input(description="One WhatsApp message: text, media, or an approved template.")
class SendWhatsAppInput:
    to: str = strawberry.field(description="The number, with its country code (E.164).")
    body: str | None = strawberry.field(
        default=None, description="The text (at most 1,600 characters); optional with media."
    )
    media_urls: list[str] = strawberry.field(
        default_factory=list, description="Up to 10 http(s) URLs of media Twilio fetches."
    )
    template: WhatsAppTemplateInput | None = strawberry.field(
        default=None,
        description="An approved template instead of text (needed outside WhatsApp's "
        "24-hour window since the contact's last message).",
    )


@strawberry.input(description="One recipient of a bulk send.")
class BulkSmsRecipientInput:
    to: str = strawberry.field(description="The number (E.164).")
    variables: JSON | None = strawberry.field(
        default=None, description="Values for the body's `{{name}}` placeholders, over the shared."
    )


@strawberry.input(description="One SMS per recipient, each with its own variables.")
class SendBulkSmsInput:
    body: str = strawberry.field(
        description="The text, with `{{name}}` placeholders filled per recipient."
    )
    recipients: list[BulkSmsRecipientInput] = strawberry.field(
        description="At most 1,000 recipients."
    )
    variables: JSON | None = strawberry.field(
        default=None, description="Values shared by every recipient."
    )


@strawberry.enum(description="What became of one recipient of a bulk send.")
class BulkSmsRecipientStatus(Enum):
    QUEUED = "QUEUED"
    OPTED_OUT = "OPTED_OUT"
    INVALID = "INVALID"
    DUPLICATE = "DUPLICATE"


@strawberry.type(description="One recipient of a bulk send.")
class BulkSmsResult:
    to: str = strawberry.field(description="The number as given (E.164 when valid).")
    status: BulkSmsRecipientStatus = strawberry.field(description="What became of it.")
    message: Message | None = strawberry.field(description="Its message, when QUEUED.")
    error: str | None = strawberry.field(description="Why not, when not QUEUED.")
    code: str | None = strawberry.field(
        description="The coded reason: INVALID_PHONE_NUMBER, BAD_USER_INPUT, PHONE_OPTED_OUT."
    )


@strawberry.type(description="The bulk send and each recipient's result, in the order given.")
class SendBulkSmsPayload:
    batch: SmsBatch = strawberry.field(description="The bulk send.")
    results: list[BulkSmsResult] = strawberry.field(description="One per recipient.")


@strawberry.enum(description="How a verification code travels.")
class VerificationChannel(Enum):
    SMS = "SMS"
    WHATSAPP = "WHATSAPP"


@strawberry.input(description="The phone to send a verification code to.")
class SendVerificationCodeInput:
    phone: str = strawberry.field(description="The number (E.164).")
    channel: VerificationChannel = strawberry.field(
        default=VerificationChannel.SMS, description="SMS or WHATSAPP."
    )


@strawberry.type(description="A code is on its way.")
class SendVerificationCodePayload:
    phone: str = strawberry.field(description="The number, E.164.")
    expires_at: dt.datetime = strawberry.field(description="When the code stops working.")
    message: Message = strawberry.field(description="The message carrying it (text hidden).")


@strawberry.input(description="A code to check.")
class CheckVerificationCodeInput:
    phone: str = strawberry.field(description="The number the code was sent to.")
    code: str = strawberry.field(description="The code received.")


@strawberry.type(description="The phone is verified and recorded on the user.")
class CheckVerificationCodePayload:
    phone: str = strawberry.field(description="The verified number, E.164.")
    verified_at: dt.datetime = strawberry.field(description="When.")


@strawberry.input(description="A number to put on the opt-out list.")
class AddPhoneOptOutInput:
    number: str = strawberry.field(description="The number (E.164).")
    detail: str = strawberry.field(default="", description="Why, for the record.")


@strawberry.type(description="The opt-out.")
class AddPhoneOptOutPayload:
    opt_out: PhoneOptOut = strawberry.field(description="The entry (new or existing).")


@strawberry.input(description="The opt-out to remove.")
class RemovePhoneOptOutInput:
    id: relay.GlobalID = strawberry.field(description="Id of the opt-out.")


@strawberry.type(description="The removed opt-out: messages go to the number again.")
class RemovePhoneOptOutPayload:
    opt_out: PhoneOptOut = strawberry.field(description="The entry, now gone.")


@strawberry.type
class Query:
    @query(
        operation=messaging.list_messages,
        description="SMS and WhatsApp messages of the current organization, both ways, "
        "newest first.",
    )
    async def messages(
        self,
        info: Info,
        channel: Annotated[
            Channel | None, strawberry.argument(description="Only this channel.")
        ] = None,
        status: Annotated[
            MessageStatus | None, strawberry.argument(description="Only messages in this state.")
        ] = None,
        batch_id: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only this bulk send's.")
        ] = None,
        number: Annotated[
            str | None, strawberry.argument(description="Only messages to this number.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Message]:
        page = await messaging.list_messages(
            info.context,
            first=first,
            after=after,
            channel=None if channel is None else channel.value,
            status=None if status is None else status.value,
            batch_id=None if batch_id is None else decode_id(batch_id, "SmsBatch"),
            number=number,
        )
        return Connection.of(page, Message.from_row)

    @query(
        operation=messaging.list_opt_outs,
        description="Numbers the organization's messages no longer go to, newest first.",
    )
    async def phone_opt_outs(
        self,
        info: Info,
        number: Annotated[str | None, strawberry.argument(description="Only this number.")] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[PhoneOptOut]:
        page = await messaging.list_opt_outs(info.context, first=first, after=after, number=number)
        return Connection.of(page, PhoneOptOut.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=messaging.send_sms,
        description="Queue an SMS; PHONE_OPTED_OUT when the number replied STOP, "
        "INVALID_PHONE_NUMBER for a number that is not one.",
    )
    async def send_sms(self, info: Info, input: SendSmsInput) -> SendMessagePayload:
        row = await messaging.send_sms(info.context, messaging.SendSmsIn(input.to, input.body))
        return SendMessagePayload(message=Message.from_row(row))

    @mutation(
        operation=messaging.send_whatsapp,
        name="sendWhatsApp",
        description="Queue a WhatsApp message: text, media URLs, or an approved template "
        "with variables.",
    )
    async def send_whatsapp(self, info: Info, input: SendWhatsAppInput) -> SendMessagePayload:
        template = (
            None
            if input.template is None
            else messaging.TemplateIn(input.template.content_sid, input.template.variables)
        )
        row = await messaging.send_whatsapp(
            info.context,
            messaging.SendWhatsAppIn(input.to, input.body, list(input.media_urls), template),
        )
        return SendMessagePayload(message=Message.from_row(row))

    @mutation(
        operation=messaging.send_bulk_sms,
        description="Queue one SMS per recipient (up to 1,000), paced to the account's "
        "limits; invalid, duplicate and opted-out numbers are reported, not sent.",
    )
    async def send_bulk_sms(self, info: Info, input: SendBulkSmsInput) -> SendBulkSmsPayload:
        done = await messaging.send_bulk_sms(
            info.context,
            messaging.SendBulkSmsIn(
                body=input.body,
                recipients=[messaging.BulkRecipientIn(r.to, r.variables) for r in input.recipients],
                variables=input.variables,
            ),
        )
        return SendBulkSmsPayload(
            batch=SmsBatch.from_row(done.batch),
            results=[
                BulkSmsResult(
                    to=r.to,
                    status=BulkSmsRecipientStatus(r.status),
                    message=None if r.message is None else Message.from_row(r.message),
                    error=r.error,
                    code=r.code,
                )
                for r in done.results
            ],
        )

    @mutation(
        operation=messaging.send_code,
        description="Send a 6-digit code to a phone the signed-in user wants to verify "
        "(valid 10 minutes; RATE_LIMITED during the resend cooldown and past the limits "
        "per number and per client address).",
    )
    async def send_verification_code(
        self, info: Info, input: SendVerificationCodeInput
    ) -> SendVerificationCodePayload:
        sent = await messaging.send_code(info.context, input.phone, Channel(input.channel.value))
        return SendVerificationCodePayload(
            phone=sent.phone, expires_at=sent.expires_at, message=Message.from_row(sent.message)
        )

    @mutation(
        operation=messaging.check_code,
        description="Check a verification code (5 attempts per code, used once); the phone is "
        "then recorded on the user. INVALID_VERIFICATION_CODE for a wrong, expired, used or "
        "exhausted code alike.",
    )
    async def check_verification_code(
        self, info: Info, input: CheckVerificationCodeInput
    ) -> CheckVerificationCodePayload:
        user = await messaging.check_code(info.context, input.phone, input.code)
        assert user.phone is not None and user.phone_verified_at is not None  # just recorded
        return CheckVerificationCodePayload(phone=user.phone, verified_at=user.phone_verified_at)

    @mutation(
        operation=messaging.add_opt_out,
        description="Put a number on the opt-out list: messages no longer go to it.",
    )
    async def add_phone_opt_out(
        self, info: Info, input: AddPhoneOptOutInput
    ) -> AddPhoneOptOutPayload:
        row = await messaging.add_opt_out(info.context, number=input.number, detail=input.detail)
        return AddPhoneOptOutPayload(opt_out=PhoneOptOut.from_row(row))

    @mutation(
        operation=messaging.remove_opt_out,
        description="Take a number off the opt-out list: messages go to it again.",
    )
    async def remove_phone_opt_out(
        self, info: Info, input: RemovePhoneOptOutInput
    ) -> RemovePhoneOptOutPayload:
        row = await messaging.remove_opt_out(
            info.context, opt_out_id=decode_id(input.id, "PhoneOptOut")
        )
        return RemovePhoneOptOutPayload(opt_out=PhoneOptOut.from_row(row))


@strawberry.type
class Subscription:
    @subscription(
        operation=messaging.message_status,
        description="A message now, then at each change of its status; completes once it "
        "is DELIVERED (SMS), READ, UNDELIVERED or FAILED.",
    )
    async def message_status(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the message.")],
    ) -> AsyncGenerator[Message, None]:
        async for row in messaging.message_status(info.context, decode_id(id, "Message")):
            yield Message.from_row(row)
