"""Retrieval over a tenant's chunks, and answers grounded in what it finds.

Ranking: the store's own full-text search (SQLite FTS5 `bm25`, PostgreSQL `ts_rank_cd`
over the GIN-indexed `tsv`), asked with the question's content words joined by OR, gives
up to `CANDIDATES` chunks of the caller's tenant; the question's embedding ranks the same
candidates by cosine similarity, and, for a knowledge base small enough to read whole
(`EXACT_LIMIT` chunks), every chunk, so a question that shares no word with its answer
still finds it. The two rankings are fused by reciprocal rank fusion (`k = 60`). A tenant
id is in every query: nothing of another tenant is ever read.

A chunk is relevant when it matched a content word of the question or its similarity is
at least `MIN_SIMILARITY`; `askKnowledgeBase` answers from the relevant chunks only, and
with none says so without calling the model.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tortoise import connections
from tortoise.functions import Sum

from kit.errors import BadUserInput
from models.knowledge import KnowledgeChunk, KnowledgeSource, SourceStatus
from models.tenancy import scoped
from resolvers.ai.completion import complete
from resolvers.ai.plan import make_plan
from resolvers.ai.types import ChatRequest, CompletionResult, MessageIn
from resolvers.context import Context
from resolvers.knowledge import embeddings
from resolvers.operations import operation

READ = "knowledge:read"
CANDIDATES = 100
EXACT_LIMIT = 5000
RRF_K = 60
MIN_SIMILARITY = 0.35
MAX_QUERY = 1000
MAX_TERMS = 24
MAX_FIRST = 20
EXCERPT = 280
ANSWER_CHUNKS = 5
NOTHING_FOUND = (
    "I could not find anything about this in the knowledge base, so I cannot answer it from there."
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOP_WORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have how i if "
    "in into is it its me my no not of on or our so than that the their them then there "
    "these they this to us was we were what when where which who whom why will with would "
    "you your about any all also".split()
)


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: KnowledgeChunk
    source: KnowledgeSource
    score: float  # fused score, higher first
    similarity: float | None
    lexical: bool  # matched a content word of the question
    excerpt: str  # HTML-escaped, matched words in <mark>

    @property
    def relevant(self) -> bool:
        return self.lexical or (self.similarity or 0.0) >= MIN_SIMILARITY


def terms_of(query: str) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(query.lower()):
        if word not in STOP_WORDS and word not in seen and len(word) <= 40:
            seen.append(word)
    return seen[:MAX_TERMS]


async def full_text(tenant_id: int, terms: Sequence[str], limit: int) -> list[int]:
    """Chunk ids of the tenant matching any term, best first: the store's own query."""
    if not terms:
        return []
    conn = connections.get("default")
    if conn.capabilities.dialect == "sqlite":
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms)
        sql = (
            "SELECT c.id FROM knowledge_chunks_fts f JOIN knowledge_chunks c ON c.id = f.rowid "
            "WHERE knowledge_chunks_fts MATCH ? AND c.tenant_id = ? "
            "ORDER BY bm25(knowledge_chunks_fts) LIMIT ?"
        )
        _, rows = await conn.execute_query(sql, [match, tenant_id, limit])
    else:
        query = " | ".join(terms)  # words only (letters and digits): nothing to escape
        sql = (
            "SELECT id FROM knowledge_chunks, to_tsquery('english', $1) q "
            "WHERE tenant_id = $2 AND tsv @@ q ORDER BY ts_rank_cd(tsv, q) DESC LIMIT $3"
        )
        _, rows = await conn.execute_query(sql, [query, tenant_id, limit])
    return [int(r["id"] if isinstance(r, dict) or hasattr(r, "keys") else r[0]) for r in rows]


def excerpt(text: str, terms: Sequence[str], size: int = EXCERPT) -> str:
    """A window of the chunk around its first matched word, HTML-escaped, with every word
    starting like a term (a stem: "refund" marks "refunds", "refunded") in <mark>."""
    stems = [t[:-1] if len(t) > 4 and t.endswith("s") else t for t in terms]
    words = list(re.finditer(r"[^\W_]+", text))
    hit = next((m for m in words if any(m.group().lower().startswith(s) for s in stems)), None)
    start = 0 if hit is None else max(0, hit.start() - size // 3)
    if start:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    end = min(len(text), start + size)
    out: list[str] = []
    cursor = start
    for m in words:
        if m.start() < start or m.end() > end:
            continue
        if any(m.group().lower().startswith(s) for s in stems):
            out.append(html.escape(text[cursor : m.start()]))
            out.append(f"<mark>{html.escape(m.group())}</mark>")
            cursor = m.end()
    out.append(html.escape(text[cursor:end]))
    return ("…" if start else "") + "".join(out).strip() + ("…" if end < len(text) else "")


async def retrieve(ctx: Context, query: str, first: int) -> list[Hit]:
    tenant_id = ctx.require(READ).tenant_id
    text = (query or "").strip()
    if not text or len(text) > MAX_QUERY:
        raise BadUserInput(
            "The query is not valid.", details={"query": f"1 to {MAX_QUERY} characters"}
        )
    if not 1 <= first <= MAX_FIRST:
        raise BadUserInput("The page size is not valid.", details={"first": f"1 to {MAX_FIRST}"})
    terms = terms_of(text)
    lexical = await full_text(tenant_id, terms, CANDIDATES)
    vector = await embeddings.embed_query(ctx, text)
    chunks = scoped(KnowledgeChunk, tenant_id)
    ranked_by_vector: list[tuple[float, int]] = []
    if vector is not None:
        size = await _size(tenant_id)
        pool = chunks if size <= EXACT_LIMIT else chunks.filter(id__in=lexical)
        stored = await pool.filter(embedding__not_isnull=True).values_list("id", "embedding")
        ranked_by_vector = sorted(
            ((embeddings.similarity(vector, embeddings.unpack(blob)), cid) for cid, blob in stored),
            reverse=True,
        )[:CANDIDATES]
    fused: dict[int, float] = {}
    for rank, cid in enumerate(lexical):
        fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
    similarity = {cid: sim for sim, cid in ranked_by_vector}
    for rank, (_, cid) in enumerate(ranked_by_vector):
        fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
    matched = set(lexical)
    # Only relevant chunks answer: matched a content word, or near enough in meaning.
    ranked = [c for c in sorted(fused, key=lambda c: -fused[c])
              if c in matched or similarity.get(c, 0.0) >= MIN_SIMILARITY]  # fmt: skip
    best = ranked[:first]
    if not best:
        return []
    rows = {c.id: c for c in await chunks.filter(id__in=best)}
    sources = {
        s.id: s
        for s in await scoped(KnowledgeSource, tenant_id).filter(
            id__in={c.source_id for c in rows.values()}
        )
    }
    return [
        Hit(
            chunk=rows[cid],
            source=sources[rows[cid].source_id],
            score=fused[cid],
            similarity=similarity.get(cid),
            lexical=cid in matched,
            excerpt=excerpt(rows[cid].text, terms),
        )
        for cid in best
        if cid in rows and rows[cid].source_id in sources
    ]


async def _size(tenant_id: int) -> int:
    """Chunks of the tenant's READY sources (a handful of rows, not the chunks)."""
    got = (
        await scoped(KnowledgeSource, tenant_id)
        .filter(status=SourceStatus.READY.value)
        .annotate(n=Sum("chunk_count"))
        .first()
        .values("n")
    )
    return int((got or {}).get("n") or 0)


@operation(READ)
async def search(ctx: Context, *, query: str, first: int | None = None) -> list[Hit]:
    """The tenant's chunks that best answer `query`, best first: those that matched a
    content word of it or are near it in meaning (never the merely least far)."""
    return await retrieve(ctx, query, first or 5)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    citations: list[Hit]
    completion: CompletionResult | None  # None when nothing relevant was found


SYSTEM = (
    "You answer questions for a company's staff from its knowledge base. Use only the "
    "numbered sources below; cite each source you use as [n]. If the sources do not "
    "contain the answer, say that the knowledge base does not say, and do not guess.\n\n"
)


def grounded_messages(hits: Sequence[Hit]) -> str:
    parts = []
    for n, hit in enumerate(hits, 1):
        where = hit.chunk.url or hit.source.url or ""
        head = f"[{n}] {hit.chunk.title or hit.source.title}" + (f" ({where})" if where else "")
        parts.append(f"{head}\n{hit.chunk.text}")
    return SYSTEM + "\n\n".join(parts)


@operation(READ)
async def ask(ctx: Context, *, question: str, model: str | None = None) -> Answer:
    """An answer from the knowledge base with its citations; with nothing relevant, a
    plain "not found" (and no model call)."""
    principal = ctx.require("ai:use")
    hits = await retrieve(ctx, question, ANSWER_CHUNKS)
    if not hits:
        return Answer(NOTHING_FOUND, [], None)
    request = ChatRequest(
        messages=[MessageIn("SYSTEM", grounded_messages(hits)), MessageIn("USER", question)],
        model=model,
    )
    plan = await make_plan(ctx, principal, request, "knowledge_answer", title=question[:80])
    result = await complete(ctx, plan)
    return Answer(result.message.content, hits, result)


NOTHING_RELEVANT = (
    "The company's knowledge base was searched for the user's question and has nothing "
    "relevant to it. Say that the knowledge base does not cover this; do not invent an "
    "answer from it."
)


async def grounding_for(ctx: Context, question: str) -> tuple[str, list[Hit]]:
    """The system message that grounds a completion (`knowledge: true`) in the relevant
    chunks, and those chunks (its citations, numbered from 1)."""
    ctx.require(READ)
    text = " ".join(question.split())[:MAX_QUERY]
    if not text:
        return NOTHING_RELEVANT, []
    hits = await retrieve(ctx, text, ANSWER_CHUNKS)
    if not hits:
        return NOTHING_RELEVANT, []
    return grounded_messages(hits), hits
