"""The storage interface, the same tests for the local disk and for S3 (moto's server)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from kit.settings import STORAGE_DEFAULT, SettingsError
from providers.objects import BadRange, ObjectMissing
from resolvers.storage import (
    Storage,
    TokenRefused,
    UrlSigner,
    content_disposition,
    from_bytes,
    object_key,
    safe_filename,
)
from tests.conftest import make_settings
from tests.files.conftest import sha256_b64


class Boom(Exception):
    pass


async def failing(data: bytes) -> AsyncIterator[bytes]:
    yield data
    raise Boom


async def test_put_get_head_delete(storage: Storage) -> None:
    data = os.urandom(300_000)
    key = object_key(7, "documents")
    stored = await storage.put(key, from_bytes(data, 65_536))
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await storage.read(key) == data
    head = await storage.head(key)
    assert head.size == len(data)
    assert head.sha256 in (None, stored.sha256)

    part = await storage.get(key, 10, 19)
    assert (part.start, part.end, part.size) == (10, 19, len(data))
    assert b"".join([c async for c in part.chunks]) == data[10:20]
    suffix = await storage.get(key, None, 5)
    assert b"".join([c async for c in suffix.chunks]) == data[-5:]
    with pytest.raises(BadRange):
        await storage.get(key, len(data), None)

    assert key in await storage.keys("t/7/")
    await storage.delete(key)
    with pytest.raises(ObjectMissing):
        await storage.head(key)
    await storage.delete(key)  # gone already: not an error


async def test_large_streamed_put(storage: Storage) -> None:
    """Beyond one S3 part: a multipart upload, assembled in order."""
    data = os.urandom(17 * 1024 * 1024 + 5)
    key = object_key(7, "documents")
    stored = await storage.put(key, from_bytes(data, 1024 * 1024))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert (await storage.head(key)).size == len(data)
    await storage.delete(key)


async def test_failed_stream_leaves_nothing(storage: Storage) -> None:
    before = await storage.keys()
    key = object_key(8, "documents")
    with pytest.raises(Boom):
        await storage.put(key, failing(b"x" * 1000))
    with pytest.raises(Boom):  # past one S3 part: the multipart upload is aborted
        await storage.put(key, failing(os.urandom(9 * 1024 * 1024)))
    assert await storage.keys() == before
    if storage.kind == "s3":
        s3 = await storage.backend._s3()  # type: ignore[attr-defined]
        uploads = await s3.list_multipart_uploads(Bucket=storage.backend.bucket)  # type: ignore[attr-defined]
        assert not uploads.get("Uploads")


async def test_presigned_get_and_put_with_plain_http(storage: Storage, tmp_path: object) -> None:
    if storage.kind == "file":
        pytest.skip("the local backend's URLs are served by the gateway (test_downloads)")
    data = b"%PDF-1.7 presigned"
    key = object_key(9, "documents")
    sha = hashlib.sha256(data).hexdigest()
    url, headers = await storage.upload_url(key, expires_in=60, size=len(data), sha256=sha)
    async with httpx.AsyncClient() as http:
        # The size and checksum are signed headers: S3 refuses another body (moto does
        # not check signatures, so completeUpload verifies the object itself too).
        assert "X-Amz-SignedHeaders=content-length%3Bhost%3Bx-amz-checksum-sha256" in url or (
            "X-Amz-SignedHeaders=content-length;host;x-amz-checksum-sha256" in url
        )
        assert headers["x-amz-checksum-sha256"] == sha256_b64(data)
        ok = await http.put(url, content=data, headers=headers)
        assert ok.status_code == 200, ok.text
        got = await http.get(
            await storage.download_url(
                key, expires_in=60, filename="in\u00e9voice.pdf", content_type="application/pdf"
            )
        )
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["content-type"] == "application/pdf"
        assert "attachment" in got.headers["content-disposition"]
    head = await storage.head(key)
    assert head.size == len(data)


def test_url_tokens() -> None:
    signer = UrlSigner("secret")
    token = signer.sign({"kind": "get", "key": "t/1/x"}, 60)
    assert signer.read(token, "get")["key"] == "t/1/x"
    with pytest.raises(TokenRefused) as refused:
        signer.read(token, "put")
    assert not refused.value.expired
    payload, mac = token.split(".")
    with pytest.raises(TokenRefused):
        signer.read(payload + "." + mac[:-2] + "AA", "get")
    with pytest.raises(TokenRefused):
        UrlSigner("other").read(token, "get")
    with pytest.raises(TokenRefused) as refused:
        signer.read(signer.sign({"kind": "get"}, 10, now=time.time() - 100), "get")
    assert refused.value.expired


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("a\x00b\r\nc.pdf", "a_b_c.pdf"),
        ('q"uo;te.pdf', "q_uo;te.pdf"),
        ("...", "file"),
        ("", "file"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_safe_filename(raw: str, safe: str) -> None:
    assert safe_filename(raw) == safe


def test_content_disposition_is_one_clean_header() -> None:
    header = content_disposition('ré\r\nsumé".pdf')
    assert "\r" not in header and "\n" not in header
    assert header.startswith('attachment; filename="r_')
    assert "filename*=UTF-8''r%C3%A9_sum%C3%A9_.pdf" in header


def test_key_layout() -> None:
    key = object_key(42, "invoices")
    parts = key.split("/")
    assert parts[:3] == ["t", "42", "invoices"]
    assert len(parts[3]) == 4 and len(parts[4]) == 2 and len(parts[5]) == 32


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "s3://", "s3://b/extra", "s3://b?nope=1", "s3://b?path_style=maybe", "file://"],
)
def test_bad_storage_url_names_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match="STORAGE_URL"):
        make_settings(storage_url=url)


def test_product_names_choose_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DO_BUCKET": "spaces-bucket",
        "DO_ENDPOINT": "https://fra1.digitaloceanspaces.com",
        "DO_REGION": "fra1",
        "DO_ACCESS_KEY_ID": "id",
        "DO_ACCESS_KEY_SECRET": "secret",
    }.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(storage_url=STORAGE_DEFAULT)
    location = settings.storage_location()
    assert (location.kind, location.bucket, location.endpoint, location.region) == (
        "s3",
        "spaces-bucket",
        "https://fra1.digitaloceanspaces.com",
        "fra1",
    )
    assert settings.s3_secret_access_key is not None
    monkeypatch.setenv("DO_ENDPOINT", "not a url")
    with pytest.raises(SettingsError, match="S3_ENDPOINT_URL"):
        make_settings()
