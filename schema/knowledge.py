"""The knowledge base the AI answers from: sources (a URL, an uploaded document, the
caller's Notion database) with their indexing status, search over their chunks, and
answers grounded in them with citations."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.knowledge import KnowledgeSource as SourceRow
from models.knowledge import SourceKind, SourceStatus
from resolvers import knowledge as api
from schema.ai import ChatCompletionPayload
from schema.permissions import mutation, query, subscription
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    SourceKind,
    description="What a source is: URL (a web page or document fetched from the web), "
    "DOCUMENT (an uploaded file: PDF, Markdown, plain text, Word), NOTION (the pages of "
    "a connected Notion database).",
)
strawberry.enum(
    SourceStatus,
    description="Where a source is: PENDING (waiting to be indexed), INDEXING, READY "
    "(searchable) or FAILED (see `reason`).",
)


@strawberry.type(description="Where the knowledge base's text comes from.")
class KnowledgeSource(ModelNode):
    _model: ClassVar[type] = SourceRow
    _permission: ClassVar[str] = "knowledge:read"
    id: relay.NodeID[int]
    kind: SourceKind = strawberry.field(description="What it is.")
    title: str = strawberry.field(description="Its title (given, or found in it).")
    url: str | None = strawberry.field(description="The URL, for a URL source.")
    status: SourceStatus = strawberry.field(description="Where its indexing is.")
    reason: str | None = strawberry.field(description="Why it FAILED.")
    chunk_count: int = strawberry.field(description="Chunks searchable from it.")
    indexed_at: dt.datetime | None = strawberry.field(description="When it was last indexed.")
    created_at: dt.datetime = strawberry.field(description="When it was added.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")

    @classmethod
    def from_row(cls, row: Any) -> KnowledgeSource:
        return cls(
            id=row.id,
            kind=SourceKind(row.kind),
            title=row.title,
            url=row.url,
            status=SourceStatus(row.status),
            reason=row.reason,
            chunk_count=row.chunk_count,
            indexed_at=row.indexed_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type(description="A piece of a source's text, as retrieval finds it.")
class KnowledgeChunk:
    id: relay.GlobalID = strawberry.field(description="The chunk's id.")
    position: int = strawberry.field(description="Its place in its source, from 0.")
    text: str = strawberry.field(description="Its text.")


@strawberry.type(description="A chunk that answers a search, with where it comes from.")
class KnowledgeSearchHit:
    chunk: KnowledgeChunk = strawberry.field(description="The chunk.")
    source: KnowledgeSource = strawberry.field(description="Its source.")
    title: str = strawberry.field(description="The title of the page or document it is from.")
    url: str | None = strawberry.field(description="Where it can be read (when it has a URL).")
    excerpt: str = strawberry.field(
        description="A passage of it, HTML-escaped, the question's words in <mark>."
    )
    score: float = strawberry.field(description="Its fused rank score (higher is better).")

    @classmethod
    def of(cls, hit: api.Hit) -> KnowledgeSearchHit:
        return cls(
            chunk=KnowledgeChunk(
                id=relay.GlobalID("KnowledgeChunk", str(hit.chunk.id)),
                position=hit.chunk.position,
                text=hit.chunk.text,
            ),
            source=KnowledgeSource.from_row(hit.source),
            title=hit.chunk.title or hit.source.title,
            url=hit.chunk.url or hit.source.url,
            excerpt=hit.excerpt,
            score=round(hit.score, 6),
        )


@strawberry.type(description="A source an answer used, numbered as the answer cites it.")
class KnowledgeCitation:
    number: int = strawberry.field(description="The [n] the answer cites it with.")
    hit: KnowledgeSearchHit = strawberry.field(description="The chunk and its source.")


@strawberry.type(description="An answer from the knowledge base, with what it rests on.")
class KnowledgeAnswer:
    answer: str = strawberry.field(
        description="The answer; when nothing relevant was found, a plain statement saying so."
    )
    found: bool = strawberry.field(description="Whether relevant chunks were found.")
    citations: list[KnowledgeCitation] = strawberry.field(
        description="The chunks given to the model, as [1], [2]… in the answer."
    )
    completion: ChatCompletionPayload | None = strawberry.field(
        description="The completion (conversation, message, usage); null when nothing was "
        "found and no model was asked."
    )


@strawberry.input(description="A source to add: exactly one of url, fileId, notion.")
class AddKnowledgeSourceInput:
    url: str | None = strawberry.field(
        default=None, description="A web page or document to fetch (HTML, PDF, text)."
    )
    file_id: relay.GlobalID | None = strawberry.field(
        default=None, description="An uploaded file (purpose DOCUMENT): PDF, Markdown, text, Word."
    )
    notion: bool = strawberry.field(
        default=False, description="The pages of the caller's connected Notion database."
    )
    title: str | None = strawberry.field(default=None, description="A title of your own.")


@strawberry.type(description="The source after the change.")
class KnowledgeSourcePayload:
    source: KnowledgeSource = strawberry.field(description="The source.")


@strawberry.input(description="A source to act on.")
class KnowledgeSourceInput:
    id: relay.GlobalID = strawberry.field(description="Id of the source.")


@strawberry.type(description="What was removed.")
class RemoveKnowledgeSourcePayload:
    id: relay.GlobalID = strawberry.field(description="The source removed.")
    removed_chunks: int = strawberry.field(description="Its chunks, removed with it.")


@strawberry.input(description="A question for the knowledge base.")
class AskKnowledgeBaseInput:
    question: str = strawberry.field(description="The question (1 to 1000 characters).")
    model: str | None = strawberry.field(
        default=None, description="The model that answers (default: the gateway's)."
    )


@strawberry.type
class Query:
    @query(operation=api.list_sources, description="The organization's knowledge sources.")
    async def knowledge_sources(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[KnowledgeSource]:
        page = await api.list_sources(info.context, first=first, after=after)
        return Connection.of(page, KnowledgeSource.from_row)

    @query(operation=api.get_source, description="One knowledge source of the organization.")
    async def knowledge_source(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the source.")],
    ) -> KnowledgeSource:
        row = await api.get_source(info.context, decode_id(id, "KnowledgeSource"))
        return KnowledgeSource.from_row(row)

    @query(
        operation=api.search,
        description="The organization's chunks that best answer `query` (full-text and "
        "embedding ranks fused), best first; only ever its own.",
    )
    async def search_knowledge(
        self,
        info: Info,
        query: Annotated[str, strawberry.argument(description="What to look for.")],
        first: Annotated[
            int | None, strawberry.argument(description="How many (1 to 20, default 5).")
        ] = None,
    ) -> list[KnowledgeSearchHit]:
        hits = await api.search(info.context, query=query, first=first)
        return [KnowledgeSearchHit.of(h) for h in hits]


@strawberry.type
class Mutation:
    @mutation(
        operation=api.add_source,
        description="Add a knowledge source; it is indexed in the background (follow it "
        "with knowledgeSourceStatus). A URL the outbound guard refuses is BAD_USER_INPUT.",
    )
    async def add_knowledge_source(
        self, info: Info, input: AddKnowledgeSourceInput
    ) -> KnowledgeSourcePayload:
        row = await api.add_source(
            info.context,
            url=input.url,
            file_id=None if input.file_id is None else decode_id(input.file_id, "File"),
            notion=input.notion,
            title=input.title,
        )
        return KnowledgeSourcePayload(source=KnowledgeSource.from_row(row))

    @mutation(
        operation=api.refresh_source,
        description="Index a source again (its old chunks stay searchable until then).",
    )
    async def refresh_knowledge_source(
        self, info: Info, input: KnowledgeSourceInput
    ) -> KnowledgeSourcePayload:
        row = await api.refresh_source(info.context, decode_id(input.id, "KnowledgeSource"))
        return KnowledgeSourcePayload(source=KnowledgeSource.from_row(row))

    @mutation(operation=api.remove_source, description="Remove a source and its chunks.")
    async def remove_knowledge_source(
        self, info: Info, input: KnowledgeSourceInput
    ) -> RemoveKnowledgeSourcePayload:
        gone = await api.remove_source(info.context, decode_id(input.id, "KnowledgeSource"))
        return RemoveKnowledgeSourcePayload(id=input.id, removed_chunks=gone)

    @mutation(
        operation=api.ask,
        description="Answer a question from the knowledge base, citing the chunks used; "
        "with nothing relevant, says so instead of inventing (and asks no model).",
    )
    async def ask_knowledge_base(self, info: Info, input: AskKnowledgeBaseInput) -> KnowledgeAnswer:
        answer = await api.ask(info.context, question=input.question, model=input.model)
        return KnowledgeAnswer(
            answer=answer.text,
            found=bool(answer.citations),
            citations=[
                KnowledgeCitation(number=n, hit=KnowledgeSearchHit.of(h))
                for n, h in enumerate(answer.citations, 1)
            ],
            completion=None
            if answer.completion is None
            else ChatCompletionPayload.of(answer.completion),
        )


@strawberry.type
class Subscription:
    @subscription(
        operation=api.source_status,
        description="A knowledge source now, then at each move, until READY or FAILED.",
    )
    async def knowledge_source_status(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the source.")],
    ) -> AsyncGenerator[KnowledgeSource, None]:
        async for row in api.source_status(info.context, decode_id(id, "KnowledgeSource")):
            yield KnowledgeSource.from_row(row)
