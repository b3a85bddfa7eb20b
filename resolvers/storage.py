"""The storage service: one interface over the object store the settings choose.

    store = storage_of(ctx.services)
    stored = await store.put(key, chunks)                  # streamed; size and SHA-256 back
    download = await store.get(key, start, end)            # streamed, byte ranges
    head = await store.head(key); await store.delete(key)
    url = await store.download_url(key, expires_in=300, filename="a.pdf", content_type=PDF)
    url, headers = await store.upload_url(key, expires_in=900, size=n, sha256=hex)

Backends: the local disk (`file://…`, the embedded default) and S3-compatible storage
(`providers/s3.py`). Objects are private either way: S3 hands out presigned URLs; the local
backend signs its own (HMAC, expiry inside), served by `gateway/http/files.py` with the
same expiry semantics. Keys are laid out by tenant and purpose (`object_key`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import errno
import hashlib
import hmac
import json
import os
import re
import shutil
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kit.settings import Settings
from providers.objects import (
    CHUNK_BYTES,
    BadRange,
    Download,
    ObjectHead,
    ObjectMissing,
    ObjectStore,
    Stored,
    resolve_range,
)
from providers.s3 import S3Storage
from resolvers.context import Services
from resolvers.spool import Spooled, read_chunks

__all__ = [
    "BadRange",
    "Download",
    "ObjectHead",
    "ObjectMissing",
    "Storage",
    "Stored",
    "TokenRefused",
    "content_disposition",
    "from_bytes",
    "object_key",
    "safe_filename",
    "storage_of",
]

DOWNLOAD_PATH = "/files/"
UPLOAD_PATH = "/files/upload/"


# Keys -------------------------------------------------------------------------------


def object_key(tenant_id: int, purpose: str, *, now: dt.datetime | None = None) -> str:
    """`t/<tenant>/<purpose>/YYYY/MM/<uuid>`: a new, unguessable key (invoices go under
    `t/<tenant>/invoices/YYYY/MM/…`, as the product documents lay them out)."""
    now = now or dt.datetime.now(dt.UTC)
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", purpose):
        raise ValueError(f"purpose {purpose!r} is not a key segment")
    return f"t/{tenant_id}/{purpose}/{now:%Y}/{now:%m}/{uuid.uuid4().hex}"


_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def safe_filename(name: str, default: str = "file") -> str:
    """A file name fit to store and to send back: no directories, control characters
    (NUL, CR, LF…), quotes or reserved characters, no leading dots, at most 200
    characters (keeping the extension), NFC-normalised."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # the last path segment only
    name = _UNSAFE.sub("_", name).strip(" ._")
    name = re.sub(r"_{2,}", "_", name)
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = stem[: 200 - len(ext) - 1] + dot + ext if dot and len(ext) <= 16 else name[:200]
    return name or default


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback and the UTF-8 name, nothing a header could break on."""
    safe = safe_filename(filename)
    ascii_name = safe.encode("ascii", "replace").decode().replace("?", "_")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(safe, safe='')}"


async def from_bytes(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Bytes already in memory as the chunk stream `put` takes."""
    for i in range(0, len(data), chunk_bytes):
        yield data[i : i + chunk_bytes]


# Signed URLs of the local backend ------------------------------------------------------


class TokenRefused(Exception):
    """A local storage URL token that is forged, altered or expired (`expired` says which)."""

    def __init__(self, expired: bool) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UrlSigner:
    """HMAC-SHA256 tokens carrying their claims and expiry: `<claims>.<mac>`."""

    def __init__(self, secret: str) -> None:
        self.key = hashlib.sha256(b"switchboard:storage-urls:" + secret.encode()).digest()

    def sign(self, claims: dict[str, Any], expires_in: int, *, now: float | None = None) -> str:
        body = {**claims, "exp": int((now or time.time()) + expires_in)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        mac = hmac.new(self.key, payload.encode(), hashlib.sha256).digest()
        return f"{payload}.{_b64(mac)}"

    def read(self, token: str, kind: str, *, now: float | None = None) -> dict[str, Any]:
        payload, _, mac = token.partition(".")
        try:
            expected = hmac.new(self.key, payload.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(mac)):
                raise TokenRefused(expired=False)
            claims = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            raise TokenRefused(expired=False) from None
        if not isinstance(claims, dict) or claims.get("kind") != kind:
            raise TokenRefused(expired=False)
        if not isinstance(claims.get("exp"), int) or claims["exp"] < (now or time.time()):
            raise TokenRefused(expired=True)
        return claims


# The local disk backend ----------------------------------------------------------------

WRITE_BATCH_BYTES = 1024 * 1024  # the local backend writes in pieces of about this size
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")


class LocalStorage:
    """Objects as files under `root` (written to a temporary name, renamed when whole, so
    a reader never sees half an object and a failed write leaves nothing)."""

    kind = "file"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.partial = self.root / ".partial"

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ObjectMissing(key)
        return self.root / key

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        path = self._path(key)
        await asyncio.to_thread(self.partial.mkdir, parents=True, exist_ok=True)
        temp = self.partial / uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        handle = await asyncio.to_thread(open, temp, "wb")
        pending: list[bytes] = []
        pending_size = 0
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BATCH_BYTES:  # one thread hop per MiB, not per chunk
                    await asyncio.to_thread(handle.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await asyncio.to_thread(handle.write, b"".join(pending))
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(os.replace, temp, path)
        except BaseException:
            handle.close()
            temp.unlink(missing_ok=True)
            raise
        return Stored(key=key, size=size, sha256=digest.hexdigest())

    async def adopt(self, key: str, spooled: Spooled) -> Stored:
        """Move a spooled upload into place under `key` (a rename when it was spooled in
        `partial`, as `Storage.spool_dir` arranges; a copy from another disk)."""
        path = self._path(key)

        def move() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(spooled.path, path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                temp = self.partial / uuid.uuid4().hex
                self.partial.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(spooled.path, temp)
                os.replace(temp, path)

        await asyncio.to_thread(move)
        return Stored(key=key, size=spooled.size, sha256=spooled.sha256)

    async def head(self, key: str) -> ObjectHead:
        try:
            stat = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        return ObjectHead(key=key, size=stat.st_size, sha256=None)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> Download:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        try:
            size = os.fstat(handle.fileno()).st_size
            if (start, end) == (None, None):
                first, last = 0, size - 1
            else:
                first, last = resolve_range(size, start, end)
        except BaseException:
            handle.close()
            raise
        return Download(size=size, start=first, end=last, chunks=_read(handle, first, last))

    async def delete(self, key: str) -> None:
        try:
            path = self._path(key)
        except ObjectMissing:
            return
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def keys(self, prefix: str = "") -> list[str]:
        def walk() -> list[str]:
            if not self.root.exists():
                return []
            found = []
            for path in self.root.rglob("*"):
                rel = path.relative_to(self.root).as_posix()
                if path.is_file() and not rel.startswith(".partial/") and rel.startswith(prefix):
                    found.append(rel)
            return sorted(found)

        return await asyncio.to_thread(walk)

    async def aclose(self) -> None:
        return None


async def _read(handle: Any, first: int, last: int) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(handle.seek, first)
        left = last - first + 1
        while left > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()


# The service --------------------------------------------------------------------------


class Storage:
    """The backend the settings chose, with URLs for downloads and direct uploads."""

    def __init__(self, backend: ObjectStore, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        secret = settings.storage_signing_key
        self.signer = UrlSigner(
            secret.get_secret_value() if secret is not None else settings.vault_keys[0]
        )

    @property
    def kind(self) -> str:
        return self.backend.kind

    @property
    def spool_dir(self) -> Path | None:
        """Where uploads are spooled while they arrive: beside the local objects (so
        storing one is a rename on the same disk), else the system's temporary directory."""
        return self.backend.partial if isinstance(self.backend, LocalStorage) else None

    async def put_spooled(self, key: str, spooled: Spooled) -> Stored:
        """Store a spooled upload under `key`: the local backend takes the file itself
        (its size and SHA-256 were computed while it was spooled), others stream it."""
        content_type = spooled.content_type or "application/octet-stream"
        if isinstance(self.backend, LocalStorage):
            return await self.backend.adopt(key, spooled)
        return await self.backend.put(key, read_chunks(spooled.path), content_type)

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str = "application/octet-stream",
    ) -> Stored:
        """Store a stream under `key`: nothing is left behind when the stream raises."""
        return await self.backend.put(key, chunks, content_type)

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> Stored:
        return await self.backend.put(key, from_bytes(data), content_type)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> Download:
        return await self.backend.get(key, start, end)

    async def read(self, key: str) -> bytes:
        """A whole (small) object in memory; stream large ones with `get`."""
        download = await self.backend.get(key)
        return b"".join([chunk async for chunk in download.chunks])

    async def head(self, key: str) -> ObjectHead:
        return await self.backend.head(key)

    async def delete(self, key: str) -> None:
        await self.backend.delete(key)

    async def keys(self, prefix: str = "") -> list[str]:
        return await self.backend.keys(prefix)

    async def download_url(
        self, key: str, *, expires_in: int, filename: str, content_type: str
    ) -> str:
        """A short-lived URL that downloads the object as an attachment named `filename`."""
        if isinstance(self.backend, S3Storage):
            return await self.backend.presigned_get(
                key,
                expires_in=expires_in,
                filename=content_disposition(filename),
                content_type=content_type,
            )
        claims = {"kind": "get", "key": key, "name": filename, "type": content_type}
        token = self.signer.sign(claims, expires_in)
        return f"{self.settings.base_url}{DOWNLOAD_PATH}{token}"

    async def upload_url(
        self, key: str, *, expires_in: int, size: int, sha256: str
    ) -> tuple[str, dict[str, str]]:
        """A short-lived URL to PUT exactly `size` bytes hashing to `sha256` (hex) under
        `key`, and the headers to send with it."""
        if isinstance(self.backend, S3Storage):
            return await self.backend.presigned_put(
                key, expires_in=expires_in, size=size, sha256=sha256
            )
        claims = {"kind": "put", "key": key, "size": size, "sha256": sha256}
        token = self.signer.sign(claims, expires_in)
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        headers = {"Content-Length": str(size), "x-amz-checksum-sha256": checksum}
        return f"{self.settings.base_url}{UPLOAD_PATH}{token}", headers

    async def aclose(self) -> None:
        await self.backend.aclose()


def build_storage(settings: Settings) -> Storage:
    location = settings.storage_location()
    backend: ObjectStore
    if location.kind == "s3":
        secret = settings.s3_secret_access_key
        backend = S3Storage(
            bucket=location.bucket,
            endpoint=location.endpoint,
            region=location.region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else "",
            path_style=location.path_style,
        )
    else:
        backend = LocalStorage(location.path)
    return Storage(backend, settings)


def storage_of(services: Services) -> Storage:
    """The process's storage service, built from the settings on first use."""
    if services.storage is None:
        services.storage = build_storage(services.settings)
    return services.storage
