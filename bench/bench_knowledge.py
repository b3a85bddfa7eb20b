"""Knowledge retrieval: quality on the labelled set, and the cost of `searchKnowledge`.

1. recall@5 of `searchKnowledge` on the labelled set (tests/knowledge/labelled.py): its
   documents chunked as the indexing job chunks them, embedded by the OpenAI sandbox;
   printed with the recall of the full-text ranking alone and of the embeddings alone.
2. `searchKnowledge(query, first: 5)` through the whole gateway (GraphQL edge, auth,
   the question's embedding from the OpenAI sandbox over HTTP, full-text candidates,
   cosine ranking, fusion, the chunks and sources read, excerpts) over `--chunks` chunks
   in one tenant, with another tenant's chunks in the same tables, against the store's own
   full-text query alone (the same terms, top 5 chunks with their text, straight on the
   connection), alternating query by query; medians and their ratio. SQLite and
   PostgreSQL (a scratch database at $BENCH_POSTGRES_URL, default
   postgres://postgres@127.0.0.1:5432/test).

    .venv/bin/python bench/bench_knowledge.py --chunks 100000 --store both
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import socket
import statistics
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import (
    bench_settings,
    call,
    graphql_body,
    open_bench_store,
    register_owner,
    temp_sqlite_url,
)

PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
SEARCH = """query($q: String!) { searchKnowledge(query: $q, first: 5) {
  title url excerpt score chunk { id text } source { id } } }"""
DIMS = 256


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def vocabulary(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 9))))
    return sorted(words)


def unit(rng: random.Random) -> bytes:
    v = [rng.gauss(0, 1) for _ in range(DIMS)]
    norm = sum(x * x for x in v) ** 0.5
    return struct.pack(f"<{DIMS}f", *(x / norm for x in v))


async def tenant_of(email: str) -> int:
    from models.accounts import User
    from models.members import Membership

    user = await User.get(email=email)
    return int((await Membership.get(user_id=user.id)).tenant_id)


async def fill(tenant_id: int, n: int, words: list[str], rng: random.Random) -> None:
    """`n` chunks of ~80 Zipf-distributed words in one READY source of the tenant."""
    from tortoise import connections

    from models.knowledge import KnowledgeSource

    source = await KnowledgeSource.create(
        tenant_id=tenant_id, kind="DOCUMENT", title=f"corpus {tenant_id}", status="READY",
        chunk_count=n,
    )  # fmt: skip
    conn = connections.get("default")
    sqlite = conn.capabilities.dialect == "sqlite"
    now: Any = dt.datetime.now(dt.UTC)
    if sqlite:
        now = now.isoformat(" ")
    marks = ", ".join("?" if sqlite else f"${i}" for i in range(1, 10))
    sql = (
        "INSERT INTO knowledge_chunks (created_at, updated_at, tenant_id, source_id, position, "
        f"title, url, text, embedding) VALUES ({marks})"
    )
    weights = [1 / (rank + 1) for rank in range(len(words))]
    vectors = [unit(rng) for _ in range(512)]
    batch: list[list[Any]] = []
    for position in range(n):
        text = " ".join(rng.choices(words, weights, k=80))
        batch.append([now, now, tenant_id, source.id, position, "corpus", None, text,
                      vectors[position % len(vectors)]])  # fmt: skip
        if len(batch) == 2000:
            await conn.execute_many(sql, batch)
            batch = []
    if batch:
        await conn.execute_many(sql, batch)


async def labelled(tenant_id: int) -> None:
    from models.knowledge import KnowledgeChunk, KnowledgeSource
    from providers.sandbox.openai_embeddings import embed
    from resolvers.knowledge.embeddings import pack
    from resolvers.knowledge.extract import chunk
    from tests.knowledge.labelled import DOCUMENTS

    for name, text in DOCUMENTS.items():
        pieces = chunk(text)
        source = await KnowledgeSource.create(
            tenant_id=tenant_id, kind="DOCUMENT", title=name, status="READY",
            chunk_count=len(pieces),
        )  # fmt: skip
        await KnowledgeChunk.bulk_create([
            KnowledgeChunk(tenant_id=tenant_id, source_id=source.id, position=i, title=name,
                           text=piece, embedding=pack(embed(piece, DIMS)))
            for i, piece in enumerate(pieces)
        ])  # fmt: skip


async def search(app: Any, token: str, q: str) -> list[dict[str, Any]]:
    answer = await call(
        app, "POST", "/graphql", graphql_body(SEARCH, {"q": q}),
        {"authorization": f"Bearer {token}"},
    )  # fmt: skip
    body = answer.json()
    if "errors" in body:
        raise SystemExit(f"searchKnowledge failed: {body['errors']}")
    return list(body["data"]["searchKnowledge"])


async def baseline(tenant_id: int, q: str) -> list[Any]:
    """The store's own full-text query alone: top 5 chunks of the tenant, with text."""
    from tortoise import connections

    from resolvers.knowledge.search import terms_of

    terms = terms_of(q)
    conn = connections.get("default")
    if conn.capabilities.dialect == "sqlite":
        match = " OR ".join(f'"{t}"' for t in terms)
        sql = (
            "SELECT c.id, c.text FROM knowledge_chunks_fts f JOIN knowledge_chunks c "
            "ON c.id = f.rowid WHERE knowledge_chunks_fts MATCH ? AND c.tenant_id = ? "
            "ORDER BY bm25(knowledge_chunks_fts) LIMIT 5"
        )
        _, rows = await conn.execute_query(sql, [match, tenant_id])
    else:
        sql = (
            "SELECT id, text FROM knowledge_chunks, to_tsquery('english', $1) q "
            "WHERE tenant_id = $2 AND tsv @@ q ORDER BY ts_rank_cd(tsv, q) DESC LIMIT 5"
        )
        _, rows = await conn.execute_query(sql, [" | ".join(terms), tenant_id])
    return list(rows)


async def run(kind: str, args: argparse.Namespace) -> dict[str, float]:
    from tortoise import connections

    from gateway.app import create_app
    from models import store as db
    from models.knowledge import install_search_index
    from providers.sandbox.openai import OpenAISandbox
    from tests.knowledge.labelled import QUESTIONS, recall_at

    admin = None
    name = f"sb_bench_{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        url = temp_sqlite_url()
    else:
        import asyncpg

        admin = await asyncpg.connect(PG_ADMIN.replace("postgres://", "postgresql://", 1))
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    rng = random.Random(16)
    try:
        async with serving(OpenAISandbox()) as ai_url:
            settings = bench_settings(
                database_url=url, openai_api_key="sk-bench-" + "k" * 24,
                openai_base_url=f"{ai_url}/v1", sandbox_enabled=False,
            )  # fmt: skip
            await open_bench_store(settings)
            await install_search_index(connections.get("default"))
            app = create_app(settings, configure_logs=False)
            token = await register_owner(app, "bench-a@example.com")
            other = await register_owner(app, "bench-b@example.com")
            small = await register_owner(app, "bench-c@example.com")
            tenant = await tenant_of("bench-a@example.com")
            words = vocabulary(5000, rng)
            started = time.perf_counter()
            await fill(tenant, args.chunks, words, rng)
            await fill(await tenant_of("bench-b@example.com"), args.chunks // 5, words, rng)
            await labelled(await tenant_of("bench-c@example.com"))
            if kind == "postgres":
                await connections.get("default").execute_script("ANALYZE knowledge_chunks")
            print(f"[{kind}] filled {args.chunks} + {args.chunks // 5} chunks in "
                  f"{time.perf_counter() - started:.0f} s")  # fmt: skip

            found = [[h["chunk"]["text"] for h in await search(app, small, q)]
                     for q, _ in QUESTIONS]  # fmt: skip
            lexical = []
            small_tenant = await tenant_of("bench-c@example.com")
            for q, _ in QUESTIONS:
                lexical.append([r["text"] for r in await baseline(small_tenant, q)])
            recall, fts_recall = recall_at(found, 5), recall_at(lexical, 5)
            assert not await search(app, other, QUESTIONS[0][0])  # b's corpus has no such word

            queries = [" ".join(rng.sample(words[40:1500], 3)) for _ in range(args.queries)]
            for q in queries[:5]:  # warm-up: caches, pools, the sandbox connection
                await search(app, token, q)
                await baseline(tenant, q)
            gateway_times: list[float] = []
            base_times: list[float] = []
            for _ in range(args.rounds):
                for q in queries:
                    t0 = time.perf_counter()
                    hits = await search(app, token, q)
                    gateway_times.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    rows = await baseline(tenant, q)
                    base_times.append(time.perf_counter() - t0)
                    assert len(hits) == 5 and len(rows) == 5, (q, len(hits), len(rows))
            gw, base = statistics.median(gateway_times), statistics.median(base_times)
            print(f"[{kind}] recall@5 on the labelled set: fused {recall:.2f} "
                  f"(full-text alone {fts_recall:.2f}), {len(QUESTIONS)} questions")  # fmt: skip
            print(f"[{kind}] store full-text query alone : {base * 1000:7.2f} ms median")
            print(f"[{kind}] searchKnowledge (gateway)   : {gw * 1000:7.2f} ms median")
            print(f"[{kind}] ratio searchKnowledge / full-text: {gw / base:.2f}x (target <= 2x)")
            await db.close_store()
            return {"recall": recall, "ratio": gw / base}
    finally:
        if admin is not None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        elif url.startswith("sqlite://"):
            with contextlib.suppress(OSError):
                os.unlink(url.removeprefix("sqlite://"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the tenant")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    for kind in ("sqlite", "postgres") if args.store == "both" else (args.store,):
        await run(kind, args)


if __name__ == "__main__":
    asyncio.run(main())
