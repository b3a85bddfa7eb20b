"""Uploads over HTTP with the multipart spec's form, direct uploads, downloads, deletion."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from typing import Any

import httpx
import pytest

from models.files import File
from resolvers.storage import storage_of
from tests.conftest import Account, error_codes, gql, register
from tests.factories import PDF_BYTES

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
EXE = b"MZ\x90\x00" + b"\x00" * 200
FIELDS = "id name contentType size sha256 purpose status downloadUrl(expiresInSeconds: 60)"
UPLOAD = f"""mutation($input: UploadFileInput!) {{
  uploadFile(input: $input) {{ file {{ {FIELDS} }} }} }}"""
PREFLIGHT = {"Apollo-Require-Preflight": "true"}


async def upload(
    client: httpx.AsyncClient,
    token: str,
    name: str,
    data: bytes,
    purpose: str = "DOCUMENT",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    operations = {"query": UPLOAD, "variables": {"input": {"file": None, "purpose": purpose}}}
    return await client.post(
        "/graphql",
        data={
            "operations": json.dumps(operations),
            "map": json.dumps({"0": ["variables.input.file"]}),
        },
        files={"0": (name, data, "application/pdf")},
        headers={"Authorization": f"Bearer {token}", **(PREFLIGHT if headers is None else headers)},
    )


async def snapshot(app: Any) -> tuple[int, list[str], list[str]]:
    """Rows, objects, and what is left in the spool directory (nothing, between requests)."""
    storage = storage_of(app.state.services)
    spool = storage.spool_dir
    spooled = sorted(p.name for p in spool.iterdir()) if spool and spool.exists() else []
    return await File.all().count(), await storage.keys(), spooled


async def test_upload_download_and_ranges(client: httpx.AsyncClient, owner: Account) -> None:
    data = PDF_BYTES + b"x" * 1000
    answer = await upload(client, owner.token, "../../In voice.pdf", data)
    body = answer.json()
    assert "errors" not in body, body
    f = body["data"]["uploadFile"]["file"]
    assert f["name"] == "In voice.pdf"
    assert f["contentType"] == "application/pdf"
    assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert f["status"] == "READY"

    got = await client.get(f["downloadUrl"])
    assert got.status_code == 200 and got.content == data
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith('attachment; filename="In voice.pdf"')
    part = await client.get(f["downloadUrl"], headers={"Range": "bytes=5-9"})
    assert part.status_code == 206 and part.content == data[5:10]
    assert part.headers["content-range"] == f"bytes 5-9/{len(data)}"
    tail = await client.get(f["downloadUrl"], headers={"Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == data[-4:]
    beyond = await client.get(f["downloadUrl"], headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"

    token = f["downloadUrl"].rsplit("/", 1)[1]
    forged = await client.get(f"/files/{token[:-3]}AAA")
    assert forged.status_code == 403
    listed = await gql(
        client, "{ files(purpose: DOCUMENT) { edges { node { id } } } }", token=owner.token
    )
    assert [e["node"]["id"] for e in listed["data"]["files"]["edges"]] == [f["id"]]


async def test_expired_link(client: httpx.AsyncClient, owner: Account, app: Any) -> None:
    body = (await upload(client, owner.token, "a.pdf", PDF_BYTES)).json()
    key = (await File.all().order_by("-id").first()).storage_key  # type: ignore[union-attr]
    store = storage_of(app.state.services)
    token = store.signer.sign({"kind": "get", "key": key, "name": "a.pdf"}, -5)
    assert (await client.get(f"/files/{token}")).status_code == 403
    assert body["data"]["uploadFile"]["file"]["id"]


def docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "purpose", "content_type"),
    [
        ("notes.md", "# Héllo\n".encode(), "DOCUMENT", "text/markdown"),
        ("t.csv", b"a,b\n1,2\n", "DOCUMENT", "text/csv"),
        (
            "r.docx",
            docx(),
            "DOCUMENT",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("me.pdf", PNG, "AVATAR", "image/png"),
        ("i.pdf", PDF_BYTES, "INVOICE", "application/pdf"),
    ],
)
async def test_types_sniffed_from_bytes(
    client: httpx.AsyncClient,
    owner: Account,
    name: str,
    data: bytes,
    purpose: str,
    content_type: str,
) -> None:
    body = (await upload(client, owner.token, name, data, purpose)).json()
    assert "errors" not in body, body
    assert body["data"]["uploadFile"]["file"]["contentType"] == content_type


@pytest.mark.parametrize(
    ("name", "data", "purpose", "code"),
    [
        ("invoice.pdf", PNG, "INVOICE", "BAD_USER_INPUT"),  # a PNG named .pdf
        ("setup.pdf", EXE, "DOCUMENT", "BAD_USER_INPUT"),
        ("avatar.png", PDF_BYTES, "AVATAR", "BAD_USER_INPUT"),
        ("big.png", PNG + b"\x00" * (4 * 1024 * 1024), "AVATAR", "PAYLOAD_TOO_LARGE"),
        ("huge.pdf", PDF_BYTES + b"x" * (16 * 1024 * 1024), "DOCUMENT", "PAYLOAD_TOO_LARGE"),
        ("bin.txt", b"abc\x00\x01\x02" * 20, "DOCUMENT", "BAD_USER_INPUT"),
    ],
)
async def test_refused_bytes_leave_nothing(
    client: httpx.AsyncClient,
    owner: Account,
    app: Any,
    name: str,
    data: bytes,
    purpose: str,
    code: str,
) -> None:
    before = await snapshot(app)
    answer = await upload(client, owner.token, name, data, purpose)
    assert code in error_codes(answer.json()), answer.text
    assert await snapshot(app) == before


async def test_multipart_needs_preflight_header_and_a_caller(
    client: httpx.AsyncClient, owner: Account, app: Any
) -> None:
    before = await snapshot(app)
    answer = await upload(client, owner.token, "a.pdf", PDF_BYTES, headers={})
    assert answer.status_code == 400
    assert error_codes(answer.json()) == ["CSRF_PREFLIGHT_REQUIRED"]
    ok_header = await upload(
        client, owner.token, "a.pdf", PDF_BYTES, headers={"X-Apollo-Operation-Name": "Up"}
    )
    assert "errors" not in ok_header.json()
    anonymous = await upload(client, "", "a.pdf", PDF_BYTES)
    assert anonymous.status_code == 401
    assert (await snapshot(app))[0] == before[0] + 1


async def test_too_many_files_in_one_request(
    client: httpx.AsyncClient, owner: Account, app: Any
) -> None:
    before = await snapshot(app)
    files = {str(i): (f"{i}.pdf", PDF_BYTES, "application/pdf") for i in range(11)}
    operations = {"query": UPLOAD, "variables": {"input": {"file": None, "purpose": "INVOICE"}}}
    answer = await client.post(
        "/graphql",
        data={
            "operations": json.dumps(operations),
            "map": json.dumps({"0": ["variables.input.file"]}),
        },
        files=files,
        headers={"Authorization": f"Bearer {owner.token}", **PREFLIGHT},
    )
    assert answer.status_code == 413
    assert await snapshot(app) == before


CREATE = """mutation($i: CreateUploadUrlInput!) {
  createUploadUrl(input: $i) { file { id status } uploadUrl headers { name value } } }"""
COMPLETE = """mutation($i: CompleteUploadInput!) {
  completeUpload(input: $i) { file { id status contentType } } }"""


async def test_direct_upload_and_racing_completes(
    client: httpx.AsyncClient, owner: Account
) -> None:
    data = PDF_BYTES * 3
    ticket = await gql(
        client,
        CREATE,
        {
            "i": {
                "name": "d.pdf",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "purpose": "INVOICE",
            }
        },
        token=owner.token,
    )
    t = ticket["data"]["createUploadUrl"]
    assert t["file"]["status"] == "PENDING"
    early = await gql(client, COMPLETE, {"i": {"fileId": t["file"]["id"]}}, token=owner.token)
    assert error_codes(early) == ["BAD_USER_INPUT"]
    wrong = await client.put(t["uploadUrl"], content=b"%PDF-" + b"y" * (len(data) - 5))
    assert wrong.status_code == 400
    assert (await client.put(t["uploadUrl"], content=data)).status_code == 200
    results = await asyncio.gather(
        *[
            gql(client, COMPLETE, {"i": {"fileId": t["file"]["id"]}}, token=owner.token)
            for _ in range(2)
        ]
    )
    for r in results:
        assert r["data"]["completeUpload"]["file"]["status"] == "READY", r
    assert await File.filter(sha256=hashlib.sha256(data).hexdigest()).count() == 1


async def test_foreign_file_not_found_and_roles(
    client: httpx.AsyncClient, owner: Account, app: Any
) -> None:
    body = (await upload(client, owner.token, "a.pdf", PDF_BYTES)).json()
    file_id = body["data"]["uploadFile"]["file"]["id"]
    other = await register(client, "Other")
    foreign = await gql(
        client, "query($id: ID!) { file(id: $id) { id } }", {"id": file_id}, token=other.token
    )
    assert error_codes(foreign) == ["NOT_FOUND"]
    delete = "mutation($i: DeleteFileInput!) { deleteFile(input: $i) { deletedId } }"
    gone = await gql(client, delete, {"i": {"id": file_id}}, token=other.token)
    assert error_codes(gone) == ["NOT_FOUND"]

    from resolvers import files as file_ops

    async def used(tenant_id: int, fid: int) -> list[str]:
        return ["invoice INV-1"]

    file_ops.register_reference_check(used)
    try:
        refused = await gql(client, delete, {"i": {"id": file_id}}, token=owner.token)
        assert error_codes(refused) == ["CONFLICT"]
        assert refused["errors"][0]["extensions"]["details"]["references"] == ["invoice INV-1"]
    finally:
        file_ops._REFERENCE_CHECKS.remove(used)
    keys = await storage_of(app.state.services).keys()
    done = await gql(client, delete, {"i": {"id": file_id}}, token=owner.token)
    assert "errors" not in done, done
    assert len(await storage_of(app.state.services).keys()) == len(keys) - 1


async def test_upload_without_a_file_part(client: httpx.AsyncClient, owner: Account) -> None:
    body = await gql(
        client,
        UPLOAD,
        {"input": {"file": "not a file", "purpose": "DOCUMENT"}},
        token=owner.token,
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_a_client_gone_mid_upload_leaves_nothing_spooled(owner: Account, app: Any) -> None:
    before = await snapshot(app)
    operations = {"query": UPLOAD, "variables": {"input": {"file": None, "purpose": "DOCUMENT"}}}
    boundary = "cut0ff"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        f"{json.dumps(operations)}\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="map"\r\n\r\n'
        f"{json.dumps({'0': ['variables.input.file']})}\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="0"; filename="half.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    messages = [
        {"type": "http.request", "body": head + PDF_BYTES, "more_body": True},
        {"type": "http.request", "body": b"\x00" * (3 * 1024 * 1024), "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"authorization", f"Bearer {owner.token}".encode()),
            (b"apollo-require-preflight", b"true"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    assert await snapshot(app) == before
