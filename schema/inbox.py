"""The support inbox: conversations of every channel, replies, assignment, AI drafts, and
the `inboxUpdates` subscription."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.inbox import ConversationStatus
from models.inbox import InboxConversation as ConversationRow
from models.messaging import Channel
from resolvers import crm, inbox
from schema.accounts import User
from schema.ai import ChatCompletionChunk, ChatCompletionPayload, TokenUsage, finish_reason
from schema.contacts import Contact
from schema.messaging import Message
from schema.permissions import mutation, query, subscription
from schema.relay import After, Connection, First, ModelNode, decode_id, encode_id

strawberry.enum(
    ConversationStatus,
    name="InboxConversationStatus",
    description="OPEN (waiting for the organization), PENDING (answered, waiting for the "
    "contact) or CLOSED (done; the contact's next message opens it again).",
)


@strawberry.type(description="A conversation with one contact on one channel.")
class InboxConversation(ModelNode):
    _model: ClassVar[type] = ConversationRow
    _permission: ClassVar[str] = "inbox:read"
    id: relay.NodeID[int]
    channel: Channel = strawberry.field(description="SMS, WHATSAPP or EMAIL.")
    address: str = strawberry.field(description="The contact's number (E.164) or email.")
    status: ConversationStatus = strawberry.field(description="Where it is.")
    unread: int = strawberry.field(description="Incoming messages no agent has opened yet.")
    subject: str = strawberry.field(description="The mail thread's subject (EMAIL).")
    last_message_at: dt.datetime | None = strawberry.field(description="Its latest message.")
    last_preview: str = strawberry.field(description="The start of its latest message.")
    created_at: dt.datetime = strawberry.field(description="When it started.")
    closed_at: dt.datetime | None = strawberry.field(description="When it was closed.")
    _contact_id: strawberry.Private[int] = 0
    _assignee_id: strawberry.Private[int | None] = None

    @classmethod
    def from_row(cls, row: Any) -> InboxConversation:
        return cls(
            id=row.id,
            channel=Channel(row.channel),
            address=row.address,
            status=ConversationStatus(row.status),
            unread=row.unread,
            subject=row.subject,
            last_message_at=row.last_message_at,
            last_preview=row.last_preview,
            created_at=row.created_at,
            closed_at=row.closed_at,
            _contact_id=row.contact_id,
            _assignee_id=row.assignee_id,
        )

    @strawberry.field(description="The contact (the CRM record), found or created on intake.")
    async def contact(self, info: Info) -> Contact | None:
        row = await crm.load_contact(info.context, self._contact_id)
        return None if row is None else Contact.from_row(row)

    @strawberry.field(description="The member it is assigned to; null when nobody.")
    async def assignee(self, info: Info) -> User | None:
        row = await crm.load_user(info.context, self._assignee_id)
        return None if row is None else User.from_row(row)

    @strawberry.field(description="Its messages, oldest first, both ways.")
    async def messages(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Message]:
        page = await inbox.conversation_messages(
            info.context, int(self.id), first=first, after=after
        )
        return Connection.of(page, Message.from_row)


@strawberry.input(description="A reply, sent on the conversation's channel.")
class ReplyToConversationInput:
    conversation_id: relay.GlobalID = strawberry.field(description="Id of the conversation.")
    body: str = strawberry.field(
        description="The text (SMS and WhatsApp: at most 1,600 characters; mail: 100,000)."
    )
    media_urls: list[str] = strawberry.field(
        default_factory=list, description="Media URLs (WhatsApp only), up to 10."
    )


@strawberry.type(description="The reply, queued, and the conversation (now PENDING).")
class ReplyToConversationPayload:
    message: Message = strawberry.field(description="The reply; follow it with messageStatus.")
    conversation: InboxConversation = strawberry.field(description="The conversation.")


@strawberry.input(description="Who takes the conversation.")
class AssignConversationInput:
    conversation_id: relay.GlobalID = strawberry.field(description="Id of the conversation.")
    assignee_id: relay.GlobalID | None = strawberry.field(
        default=None, description="A member's user id; null to unassign."
    )


@strawberry.input(description="The conversation to close.")
class CloseConversationInput:
    conversation_id: relay.GlobalID = strawberry.field(description="Id of the conversation.")


@strawberry.type(description="The conversation after the change.")
class ConversationPayload:
    conversation: InboxConversation = strawberry.field(description="The conversation.")


@strawberry.input(description="The conversation to draft a reply for.")
class DraftReplyInput:
    conversation_id: relay.GlobalID = strawberry.field(description="Id of the conversation.")
    model: str | None = strawberry.field(
        default=None, description="Model name; default AI_DEFAULT_MODEL."
    )


@strawberry.type(description="A proposed reply; nothing was sent.")
class DraftReplyPayload:
    text: str = strawberry.field(description="The draft, for a person to edit and send.")
    usage: TokenUsage = strawberry.field(description="Tokens and cost of the draft.")
    completion: ChatCompletionPayload = strawberry.field(
        description="The completion as the AI area stores it (its conversation and message)."
    )


def _conversation_id(gid: relay.GlobalID) -> int:
    return decode_id(gid, "InboxConversation")


@strawberry.type
class Query:
    @query(
        operation=inbox.list_conversations,
        description="The organization's inbox: conversations of every channel, newest first.",
    )
    async def inbox_conversations(
        self,
        info: Info,
        channel: Annotated[
            Channel | None, strawberry.argument(description="Only this channel.")
        ] = None,
        status: Annotated[
            ConversationStatus | None, strawberry.argument(description="Only this status.")
        ] = None,
        assignee_id: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only those assigned to this member (a user id)."),
        ] = None,
        unassigned: Annotated[
            bool, strawberry.argument(description="Only those assigned to nobody.")
        ] = False,
        unread: Annotated[
            bool | None,
            strawberry.argument(description="Only those with (true) or without (false) unread."),
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[InboxConversation]:
        page = await inbox.list_conversations(
            info.context,
            first=first,
            after=after,
            channel=None if channel is None else channel.value,
            status=None if status is None else status.value,
            assignee_id=None if assignee_id is None else decode_id(assignee_id, "User"),
            unassigned=unassigned,
            unread=unread,
        )
        return Connection.of(page, InboxConversation.from_row)

    @query(
        operation=inbox.get_conversation,
        description="One conversation with its messages; opening it marks it read.",
    )
    async def inbox_conversation(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the conversation.")],
    ) -> InboxConversation:
        row = await inbox.get_conversation(info.context, _conversation_id(id))
        return InboxConversation.from_row(row)


@strawberry.type
class Mutation:
    @mutation(
        operation=inbox.reply,
        description="Answer a conversation on its channel (SMS, WhatsApp or email); "
        "PHONE_OPTED_OUT when the contact replied STOP.",
    )
    async def reply_to_conversation(
        self, info: Info, input: ReplyToConversationInput
    ) -> ReplyToConversationPayload:
        cid = _conversation_id(input.conversation_id)
        message = await inbox.reply(
            info.context, cid, inbox.ReplyIn(input.body, list(input.media_urls))
        )
        row = await inbox.get_conversation(info.context, cid, mark_read=False)
        return ReplyToConversationPayload(
            message=Message.from_row(message), conversation=InboxConversation.from_row(row)
        )

    @mutation(operation=inbox.assign, description="Give a conversation to a member, or nobody.")
    async def assign_conversation(
        self, info: Info, input: AssignConversationInput
    ) -> ConversationPayload:
        cid = _conversation_id(input.conversation_id)
        user = None if input.assignee_id is None else decode_id(input.assignee_id, "User")
        row = await inbox.assign(info.context, cid, user)
        return ConversationPayload(conversation=InboxConversation.from_row(row))

    @mutation(
        operation=inbox.close,
        description="Close a conversation; the contact's next message opens it again.",
    )
    async def close_conversation(
        self, info: Info, input: CloseConversationInput
    ) -> ConversationPayload:
        row = await inbox.close(info.context, _conversation_id(input.conversation_id))
        return ConversationPayload(conversation=InboxConversation.from_row(row))

    @mutation(
        operation=inbox.draft_reply,
        description="Have the AI propose a reply from the conversation and the contact's CRM "
        "record (billed to the organization's AI quota); nothing is sent.",
    )
    async def draft_reply(self, info: Info, input: DraftReplyInput) -> DraftReplyPayload:
        result = await inbox.draft_reply(
            info.context, _conversation_id(input.conversation_id), input.model
        )
        return DraftReplyPayload(
            text=result.message.content,
            usage=TokenUsage.of(result.usage),
            completion=ChatCompletionPayload.of(result),
        )


@strawberry.type
class Subscription:
    @subscription(
        operation=inbox.inbox_updates,
        description="Each conversation of the organization as it changes (a new message, a "
        "reply, an assignment, a close): for agents' screens.",
    )
    async def inbox_updates(self, info: Info) -> AsyncGenerator[InboxConversation, None]:
        async for row in inbox.inbox_updates(info.context):
            yield InboxConversation.from_row(row)

    @subscription(
        operation=inbox.stream_draft_reply,
        description="`draftReply`, streamed as the AI writes it.",
    )
    async def draft_reply(
        self, info: Info, input: DraftReplyInput
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        async for event in inbox.stream_draft_reply(
            info.context, _conversation_id(input.conversation_id), input.model
        ):
            yield ChatCompletionChunk(
                delta=event.delta,
                index=event.index,
                finish_reason=finish_reason(event.finish_reason),
                usage=None if event.usage is None else TokenUsage.of(event.usage),
                conversation_id=encode_id("Conversation", event.conversation_id),
                message_id=encode_id("ChatMessage", event.message_id),
            )
