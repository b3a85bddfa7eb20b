"""The knowledge base end to end: a URL source served by a local server (allowed by the
operator's OUTBOUND_ALLOWED_HOSTS) and a PDF source indexed by the worker, searched and
asked with the right citations; another tenant never sees them; the outbound guard,
hostile documents and roles."""

from __future__ import annotations

import io
import zipfile

from docx import Document

from models.knowledge import KnowledgeChunk
from tests.conftest import error_codes, gql, register
from tests.credentials.test_credentials import member_token, tenant_id_of
from tests.knowledge.conftest import (
    ASK,
    REFRESH,
    REMOVE,
    SEARCH,
    SOURCE,
    Gateway,
    add,
    search,
    settled,
    upload,
)
from tests.knowledge.labelled import DOCUMENTS, QUESTIONS, recall_at
from tests.pdfs import text_pdf


async def test_a_url_and_a_pdf_answer_with_citations_and_stay_in_their_tenant(
    gateway: Gateway, web: str
) -> None:
    client = gateway.client
    owner = await register(client)
    page = await add(client, owner.token, url=f"{web}/handbook.html")
    assert page["status"] == "PENDING" and page["kind"] == "URL"
    pdf_id = await upload(client, owner.token, "warranty.pdf", text_pdf([
        "Warranty terms.", "Every espresso machine carries a two year warranty.",
        "The warranty covers the pump and the heating element.",
    ]))  # fmt: skip
    pdf = await add(client, owner.token, fileId=pdf_id, title="Warranty")
    ready_page = await settled(client, owner.token, page["id"])
    assert ready_page["status"] == "READY", ready_page
    assert ready_page["title"] == "Support handbook" and ready_page["chunkCount"] >= 1
    assert (await settled(client, owner.token, pdf["id"]))["status"] == "READY"

    hits = await search(client, owner.token, "refund within how many days?")
    assert hits[0]["url"] == f"{web}/handbook.html"
    assert "<mark>refund</mark>" in hits[0]["excerpt"]
    assert "do not index me" not in " ".join(h["chunk"]["text"] for h in hits)  # no script
    hits = await search(client, owner.token, "espresso machine warranty")
    assert hits[0]["source"]["id"] == pdf["id"] and hits[0]["title"] == "Warranty"

    body = await gql(client, ASK, {"i": {"question": "How long is the espresso machine "
                                         "warranty?"}}, owner.token)  # fmt: skip
    assert "errors" not in body, body
    answer = body["data"]["askKnowledgeBase"]
    assert answer["found"] is True and answer["completion"]["message"]["content"]
    assert answer["citations"][0]["hit"]["source"]["id"] == pdf["id"]
    assert answer["citations"][0]["number"] == 1
    # Nothing relevant: said so, no model asked.
    body = await gql(client, ASK, {"i": {"question": "Who painted the Mona Lisa?"}}, owner.token)
    nothing = body["data"]["askKnowledgeBase"]
    assert nothing["found"] is False and nothing["citations"] == []
    assert nothing["completion"] is None and "could not find" in nothing["answer"]

    # Another organization: its searches never see them, its ids are not found.
    other = await register(client, org="Other")
    assert await search(client, other.token, "refund espresso warranty handbook") == []
    body = await gql(client, ASK, {"i": {"question": "How long is the espresso machine "
                                         "warranty?"}}, other.token)  # fmt: skip
    assert body["data"]["askKnowledgeBase"]["found"] is False
    for query, variables in ((SOURCE, {"id": pdf["id"]}), (REFRESH, {"i": {"id": pdf["id"]}}),
                             (REMOVE, {"i": {"id": pdf["id"]}})):  # fmt: skip
        assert error_codes(await gql(client, query, variables, other.token)) == ["NOT_FOUND"]
    node = await gql(client, "query($id: ID!) { node(id: $id) { id } }", {"id": pdf["id"]},
                     other.token)  # fmt: skip
    assert node["data"]["node"] is None

    # Refresh, then remove: its chunks go with it.
    body = await gql(client, REFRESH, {"i": {"id": page["id"]}}, owner.token)
    assert body["data"]["refreshKnowledgeSource"]["source"]["status"] == "PENDING"
    assert (await settled(client, owner.token, page["id"]))["status"] == "READY"
    body = await gql(client, REMOVE, {"i": {"id": page["id"]}}, owner.token)
    assert body["data"]["removeKnowledgeSource"]["removedChunks"] >= 1
    assert all(
        h["source"]["id"] != page["id"]
        for h in await search(client, owner.token, "refund support desk")
    )
    tenant = tenant_id_of(owner)
    assert await KnowledgeChunk.filter(tenant_id=tenant).count() == 1  # the PDF's


async def test_the_outbound_guard_and_hostile_pages(gateway: Gateway, web: str) -> None:
    client = gateway.client
    owner = await register(client)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "ftp://x/",
                "http://[::1]/", "file:///etc/passwd"):  # fmt: skip
        body = await gql(
            client,
            "mutation($i: AddKnowledgeSourceInput!) { addKnowledgeSource("
            "input: $i) { source { id } } }",
            {"i": {"url": url}},
            owner.token,
        )
        assert error_codes(body) == ["BAD_USER_INPUT"], (url, body)
        assert "url" in body["errors"][0]["extensions"]["details"]
    for path, reason in (("/redirect", "refused"), ("/huge.html", "larger than"),
                         ("/image.png", "not a document"), ("/missing", "404")):  # fmt: skip
        source = await add(client, owner.token, url=f"{web}{path}")
        done = await settled(client, owner.token, source["id"])
        assert done["status"] == "FAILED" and reason in done["reason"], (path, done)
    assert await KnowledgeChunk.filter(tenant_id=tenant_id_of(owner)).count() == 0


async def test_without_the_operators_allowance_a_local_server_is_refused(
    store: object, worker: object, web: str
) -> None:
    from tests.notion.conftest import serving

    async with serving(store, worker, run_jobs=False) as gw:
        owner = await register(gw.client)
        body = await gql(gw.client, "mutation($i: AddKnowledgeSourceInput!) { "
                         "addKnowledgeSource(input: $i) { source { id } } }",
                         {"i": {"url": f"{web}/handbook.html"}}, owner.token)  # fmt: skip
        assert error_codes(body) == ["BAD_USER_INPUT"]


def docx_bytes(*paragraphs: str) -> bytes:
    document = Document()
    for text in paragraphs:
        document.add_paragraph(text)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Plan"
    table.rows[0].cells[1].text = "Premium support costs 99 euros a month"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb_docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/document.xml", b"<" + b"a" * (80 * 1024 * 1024))
    return out.getvalue()


async def test_documents_and_hostile_documents(gateway: Gateway) -> None:
    client = gateway.client
    owner = await register(client)
    word = await add(
        client,
        owner.token,
        fileId=await upload(
            client, owner.token, "plans.docx", docx_bytes("Our plans.", "The basic plan is free.")
        ),
    )
    markdown = await add(
        client,
        owner.token,
        fileId=await upload(
            client, owner.token, "notes.md", b"# Notes\n\nThe staging server restarts at 04:00.\n"
        ),
    )
    assert (await settled(client, owner.token, word["id"]))["status"] == "READY"
    assert (await settled(client, owner.token, markdown["id"]))["status"] == "READY"
    hits = await search(client, owner.token, "premium support price")
    assert hits and "99 euros" in hits[0]["chunk"]["text"]  # table text is read
    assert "04:00" in (await search(client, owner.token, "staging restart"))[0]["chunk"]["text"]

    bomb = await add(
        client, owner.token, fileId=await upload(client, owner.token, "bomb.docx", zip_bomb_docx())
    )
    fake = await add(
        client,
        owner.token,
        fileId=await upload(client, owner.token, "fake.pdf", b"%PDF-1.7\n" + b"garbage " * 500),
    )
    for source, reason in ((bomb, "inflates"), (fake, "PDF")):
        done = await settled(client, owner.token, source["id"])
        assert done["status"] == "FAILED" and reason in done["reason"], done
    for bad in ({}, {"url": "https://example.com", "notion": True}, {"title": "x"}):
        body = await gql(client, "mutation($i: AddKnowledgeSourceInput!) { addKnowledgeSource("
                         "input: $i) { source { id } } }", {"i": bad}, owner.token)  # fmt: skip
        assert error_codes(body) == ["BAD_USER_INPUT"], (bad, body)
    for q in ("", "x" * 1001):
        body = await gql(client, SEARCH, {"q": q}, owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], body


async def test_roles(gateway: Gateway, web: str) -> None:
    client = gateway.client
    owner = await register(client)
    tokens = {role: (await member_token(gateway.settings, owner, role))[0]
              for role in ("MANAGER", "SUPPORT", "ACCOUNTING", "READ_ONLY")}  # fmt: skip
    made = await add(client, tokens["MANAGER"], url=f"{web}/handbook.html")
    await settled(client, owner.token, made["id"])
    assert await search(client, tokens["SUPPORT"], "refund")
    ask = await gql(client, ASK, {"i": {"question": "refund days?"}}, tokens["SUPPORT"])
    assert "errors" not in ask, ask
    for role in ("ACCOUNTING", "READ_ONLY"):
        body = await gql(client, SEARCH, {"q": "refund"}, tokens[role])
        assert error_codes(body) == ["FORBIDDEN"], role
    for role in ("SUPPORT", "ACCOUNTING", "READ_ONLY"):
        body = await gql(client, REMOVE, {"i": {"id": made["id"]}}, tokens[role])
        assert error_codes(body) == ["FORBIDDEN"], role
    listed = "{ knowledgeSources(first: 10) { edges { node { id status } } } }"
    body = await gql(client, listed, token=tokens["SUPPORT"])
    assert [e["node"]["id"] for e in body["data"]["knowledgeSources"]["edges"]] == [made["id"]]
    other = await register(client, org="Other")
    body = await gql(client, listed, token=other.token)
    assert body["data"]["knowledgeSources"]["edges"] == []


async def test_notion_pages_are_a_source(gateway: Gateway) -> None:
    from tests.notion.conftest import CREATE_PAGE

    client = gateway.client
    owner = await register(client)
    assert "errors" not in await gateway.connect(owner)
    made = await gql(client, CREATE_PAGE, {"i": {
        "properties": {"Name": {"title": [{"text": {"content": "Deploy checklist"}}]}},
        "content": "Run the migrations before switching traffic.\n\nKeep the old release "
                   "for one hour.",
    }}, owner.token)  # fmt: skip
    url = made["data"]["createNotionPage"]["item"]["url"]
    source = await add(client, owner.token, notion=True)
    assert source["kind"] == "NOTION"
    assert (await settled(client, owner.token, source["id"]))["status"] == "READY"
    [hit, *_] = await search(client, owner.token, "migrations before switching traffic")
    assert hit["url"] == url and hit["title"] == "Deploy checklist"


async def test_retrieval_quality_recall_at_5(gateway: Gateway) -> None:
    """The labelled set: recall@5 of the fused ranking is at least 0.9."""
    client = gateway.client
    owner = await register(client)
    ids = []
    for name, text in DOCUMENTS.items():
        file_id = await upload(client, owner.token, name, text.encode())
        ids.append((await add(client, owner.token, fileId=file_id))["id"])
    for gid in ids:
        assert (await settled(client, owner.token, gid))["status"] == "READY"
    found = []
    for question, _ in QUESTIONS:
        hits = await search(client, owner.token, question, first=5)
        found.append([h["chunk"]["text"] for h in hits])
    assert recall_at(found, 5) >= 0.9, [
        (q, p)
        for (q, p), texts in zip(QUESTIONS, found, strict=True)
        if not any(p in t for t in texts)
    ]


async def test_nul_bytes_never_reach_a_chunk(gateway: Gateway, web: str) -> None:
    client = gateway.client
    owner = await register(client)
    source = await add(client, owner.token, url=f"{web}/nul.txt")
    done = await settled(client, owner.token, source["id"])
    assert done["status"] == "READY", done
    [hit] = await search(client, owner.token, "backup nightly")
    assert "\x00" not in hit["chunk"]["text"] and "02:00" in hit["chunk"]["text"]
