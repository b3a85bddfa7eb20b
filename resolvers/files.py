"""Files: uploads (streamed through the gateway, or straight to the store with a presigned
PUT), listing, download URLs, deletion with a reference check.

What other areas call (the invoices area, the mailbox intake):

    row = await store_stream(services, tenant_id=…, user_id=…, purpose=FilePurpose.INVOICE,
                             filename="scan.pdf", chunks=async_iterator_of_bytes)
    row = await store_bytes(services, tenant_id=…, user_id=None, purpose=…, filename=…,
                            data=pdf_bytes)
    download = await storage_of(services).get(row.storage_key)   # streamed read
    data = await storage_of(services).read(row.storage_key)       # small objects

    @register_reference_check
    async def invoices_using(tenant_id: int, file_id: int) -> list[str]:
        return [f"invoice {n}" for n in ...]   # deleteFile answers CONFLICT naming them

Bytes are checked while they stream (size against the purpose's limit, type sniffed from
the first bytes and confirmed at the end); a refused stream leaves no object and no row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from kit import sniff
from kit.errors import BadUserInput, Conflict, Forbidden, NotFound, PayloadTooLarge
from kit.roles import allowed
from models.files import File, FilePurpose, FileStatus
from models.tenancy import get_scoped, scoped
from resolvers.context import Context, Services
from resolvers.events import emit, global_id
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.spool import Spooled
from resolvers.storage import (
    ObjectMissing,
    Stored,
    from_bytes,
    object_key,
    safe_filename,
    storage_of,
)

MB = 1024 * 1024
MAX_FILES_PER_REQUEST = 10  # the product documents' "up to 10 PDFs per request"
DOWNLOAD_SECONDS_DEFAULT = 300
DOWNLOAD_SECONDS_MAX = 24 * 3600
UPLOAD_URL_SECONDS = 900


@dataclass(frozen=True)
class Policy:
    """What a purpose accepts: sniffed content types, the most bytes, the key segment."""

    types: frozenset[str]
    max_bytes: int
    segment: str

    def accepts_kind(self, kind: str | None) -> bool:
        """Whether the first bytes' verdict can still end in an accepted type."""
        if kind == "text":
            return bool(self.types & sniff.TEXTS)
        if kind == "zip":
            return bool(self.types & {sniff.DOCX, sniff.XLSX})
        return kind in self.types

    def describe(self) -> str:
        return f"{', '.join(sorted(self.types))} up to {self.max_bytes // MB} MB"


# The product documents' limits: avatars are images up to 4 MB; invoices PDFs up to 16 MB;
# documents PDFs, text, Markdown, CSV, Word (and Excel) up to 16 MB.
POLICIES: dict[FilePurpose, Policy] = {
    FilePurpose.AVATAR: Policy(sniff.IMAGES, 4 * MB, "avatars"),
    FilePurpose.INVOICE: Policy(frozenset({sniff.PDF}), 16 * MB, "invoices"),
    FilePurpose.DOCUMENT: Policy(
        frozenset({sniff.PDF, *sniff.TEXTS, sniff.DOCX, sniff.XLSX}), 16 * MB, "documents"
    ),
}
MAX_FILE_BYTES = max(p.max_bytes for p in POLICIES.values())


# References: other areas say which of their rows use a file ------------------------------

ReferenceCheck = Callable[[int, int], Awaitable[list[str]]]
_REFERENCE_CHECKS: list[ReferenceCheck] = []


def register_reference_check(check: ReferenceCheck) -> ReferenceCheck:
    """Register `check(tenant_id, file_id) -> ["invoice INV-7", …]`: what still uses the
    file. `deleteFile` refuses with CONFLICT listing them while any answers."""
    _REFERENCE_CHECKS.append(check)
    return check


async def references_of(tenant_id: int, file_id: int) -> list[str]:
    found: list[str] = []
    for check in _REFERENCE_CHECKS:
        found.extend(await check(tenant_id, file_id))
    return found


# Streaming checks -------------------------------------------------------------------------


def _wrong_type(policy: Policy, purpose: FilePurpose) -> BadUserInput:
    problem = f"is not a type {purpose.value} accepts ({policy.describe()})"
    return BadUserInput(f"file: {problem}", details={"file": problem})


def _too_large(policy: Policy, purpose: FilePurpose) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"file: larger than {policy.max_bytes} bytes, the limit for {purpose.value}",
        limit=policy.max_bytes,
        details={"file": f"must be at most {policy.max_bytes} bytes"},
    )


class Checked:
    """The chunks of an upload, checked as they pass: raises (so the store discards what
    it wrote) once the size passes the purpose's limit or the bytes cannot be an accepted
    type; `content_type` is the sniffed type once the stream is whole."""

    def __init__(self, chunks: AsyncIterator[bytes], purpose: FilePurpose, filename: str) -> None:
        self.chunks = chunks
        self.purpose = purpose
        self.policy = POLICIES[purpose]
        self.sniffer = sniff.Sniffer(filename)
        self.size = 0
        self.content_type: str | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            self.size += len(chunk)
            if self.size > self.policy.max_bytes:
                raise _too_large(self.policy, self.purpose)
            self.sniffer.feed(chunk)
            if self.sniffer.decided and (
                self.sniffer.refused or not self.policy.accepts_kind(self.sniffer.kind)
            ):
                raise _wrong_type(self.policy, self.purpose)
            yield chunk
        content_type = self.sniffer.finish()
        if content_type is None or content_type not in self.policy.types:
            raise _wrong_type(self.policy, self.purpose)
        self.content_type = content_type


def _file_event(row: File) -> dict[str, Any]:
    return {
        "id": global_id("File", row.id),
        "name": row.name,
        "contentType": row.content_type,
        "size": row.size,
        "purpose": row.purpose,
    }


async def store_stream(
    services: Services,
    *,
    tenant_id: int,
    user_id: int | None,
    purpose: FilePurpose,
    filename: str,
    chunks: AsyncIterator[bytes],
) -> File:
    """Store an upload's bytes and record its READY row (and `file.uploaded`, in the same
    transaction). Refused bytes raise PAYLOAD_TOO_LARGE / BAD_USER_INPUT with nothing
    stored; a failure after the object was written removes it again."""
    name = safe_filename(filename)
    store = storage_of(services)
    key = object_key(tenant_id, POLICIES[purpose].segment)
    checked = Checked(chunks, purpose, name)
    stored = await store.put(key, checked.__aiter__())
    assert checked.content_type is not None  # Checked raised otherwise
    return await _record(services, tenant_id, user_id, purpose, name, checked.content_type, stored)


async def store_spooled(
    services: Services,
    *,
    tenant_id: int,
    user_id: int | None,
    purpose: FilePurpose,
    spooled: Spooled,
    default_name: str = "file",
) -> File:
    """`store_stream` for an upload the request already spooled (hashed and sniffed on
    arrival, `resolvers/spool.py`): checked against the purpose, then handed to storage."""
    policy = POLICIES[purpose]
    if spooled.size > policy.max_bytes:
        raise _too_large(policy, purpose)
    if spooled.content_type is None or spooled.content_type not in policy.types:
        raise _wrong_type(policy, purpose)
    name = safe_filename(spooled.filename or default_name)
    key = object_key(tenant_id, policy.segment)
    stored = await storage_of(services).put_spooled(key, spooled)
    return await _record(services, tenant_id, user_id, purpose, name, spooled.content_type, stored)


async def _record(
    services: Services,
    tenant_id: int,
    user_id: int | None,
    purpose: FilePurpose,
    name: str,
    content_type: str,
    stored: Stored,
) -> File:
    try:
        async with in_transaction() as conn:
            row = await File.create(
                using_db=conn,
                tenant_id=tenant_id,
                name=name,
                content_type=content_type,
                size=stored.size,
                sha256=stored.sha256,
                purpose=purpose.value,
                storage_key=stored.key,
                status=FileStatus.READY.value,
                created_by_id=user_id,
            )
            await emit(tenant_id, "file.uploaded", _file_event(row), connection=conn)
    except BaseException:
        await storage_of(services).delete(stored.key)
        raise
    return row


async def store_bytes(
    services: Services,
    *,
    tenant_id: int,
    user_id: int | None,
    purpose: FilePurpose,
    filename: str,
    data: bytes,
) -> File:
    """`store_stream` for bytes already in memory (a mail attachment)."""
    return await store_stream(
        services,
        tenant_id=tenant_id,
        user_id=user_id,
        purpose=purpose,
        filename=filename,
        chunks=from_bytes(data),
    )


@operation("files:write")
async def upload_file(ctx: Context, *, purpose: FilePurpose, upload: Spooled) -> File:
    principal = ctx.require_principal()
    return await store_spooled(
        ctx.services,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        purpose=purpose,
        spooled=upload,
    )


# Reads ----------------------------------------------------------------------------------


@operation("files:read")
async def list_files(
    ctx: Context, *, purpose: FilePurpose | None, first: int | None, after: str | None
) -> Page[Any]:
    qs = scoped(File, ctx.require_principal().tenant_id)
    if purpose is not None:
        qs = qs.filter(purpose=purpose.value)
    return await page_of(ctx, qs, first=first, after=after)


@operation("files:read")
async def get_file(ctx: Context, file_id: int) -> File:
    return await get_scoped(File, ctx.require_principal().tenant_id, file_id)


async def download_url(ctx: Context, row: File, expires_in: int | None) -> str | None:
    """A short-lived URL of a READY file's bytes (None while PENDING)."""
    seconds = DOWNLOAD_SECONDS_DEFAULT if expires_in is None else expires_in
    if not 10 <= seconds <= DOWNLOAD_SECONDS_MAX:
        problem = f"must be between 10 and {DOWNLOAD_SECONDS_MAX}"
        raise BadUserInput(f"expiresInSeconds: {problem}", details={"expiresInSeconds": problem})
    if row.status != FileStatus.READY.value:
        return None
    return await storage_of(ctx.services).download_url(
        row.storage_key, expires_in=seconds, filename=row.name, content_type=row.content_type
    )


# Direct uploads (presigned PUT) ------------------------------------------------------------

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class UploadTicket:
    file: File
    url: str
    headers: dict[str, str]
    expires_at: dt.datetime


@operation("files:write")
async def create_upload_url(
    ctx: Context, *, name: str, size: int, sha256: str, purpose: FilePurpose
) -> UploadTicket:
    principal = ctx.require_principal()
    policy = POLICIES[purpose]
    sha256 = sha256.strip().lower()
    problems: dict[str, str] = {}
    if not 1 <= size <= policy.max_bytes:
        problems["size"] = f"must be between 1 and {policy.max_bytes} bytes for {purpose.value}"
    if not _SHA256.match(sha256):
        problems["sha256"] = "must be 64 hexadecimal characters"
    if problems:
        raise BadUserInput("Invalid upload.", details=problems)
    key = object_key(principal.tenant_id, policy.segment)
    row = await File.create(
        tenant_id=principal.tenant_id,
        name=safe_filename(name),
        content_type="",
        size=size,
        sha256=sha256,
        purpose=purpose.value,
        storage_key=key,
        status=FileStatus.PENDING.value,
        created_by_id=principal.user_id,
    )
    url, headers = await storage_of(ctx.services).upload_url(
        key, expires_in=UPLOAD_URL_SECONDS, size=size, sha256=sha256
    )
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=UPLOAD_URL_SECONDS)
    return UploadTicket(row, url, headers, expires_at)


@operation("files:write")
async def complete_upload(ctx: Context, file_id: int) -> File:
    """Verify a direct upload's object (size, SHA-256, sniffed type) and make the file READY.
    Bytes that do not match are removed (the row stays PENDING for another try); a second
    call, or one racing this one, answers the READY file."""
    principal = ctx.require_principal()
    row = await get_scoped(File, principal.tenant_id, file_id)
    if row.status == FileStatus.READY.value:
        return row
    purpose = FilePurpose(row.purpose)
    store = storage_of(ctx.services)
    try:
        download = await store.get(row.storage_key)
    except ObjectMissing:
        raise BadUserInput(
            "The file's bytes have not been uploaded.",
            details={"fileId": "nothing was uploaded to the upload URL yet"},
        ) from None
    checked = Checked(download.chunks, purpose, row.name)
    digest = hashlib.sha256()
    try:
        async for chunk in checked:
            digest.update(chunk)
        problems: dict[str, str] = {}
        if checked.size != row.size:
            problems["size"] = f"the object has {checked.size} bytes, not {row.size}"
        if digest.hexdigest() != row.sha256:
            problems["sha256"] = "the object's SHA-256 differs from the announced one"
        if problems:
            raise BadUserInput("The uploaded object does not match.", details=problems)
    except (BadUserInput, PayloadTooLarge):
        await store.delete(row.storage_key)
        raise
    async with in_transaction() as conn:
        won = (
            await File.filter(id=row.id, tenant_id=principal.tenant_id, status="PENDING")
            .using_db(conn)
            .update(status=FileStatus.READY.value, content_type=checked.content_type)
        )
        row = await File.filter(id=row.id).using_db(conn).get()
        if won:
            await emit(principal.tenant_id, "file.uploaded", _file_event(row), connection=conn)
    return row


# Deletion -----------------------------------------------------------------------------------


@operation("files:write")
async def delete_file(ctx: Context, file_id: int) -> int:
    """Remove the row and its object. The uploader deletes their own files; other members'
    files take files:delete. A file something still uses is refused (CONFLICT)."""
    principal = ctx.require_principal()
    row = await get_scoped(File, principal.tenant_id, file_id)
    if row.created_by_id != principal.user_id and not allowed(principal.role, "files:delete"):
        raise Forbidden("Only the uploader, an OWNER or a MANAGER may delete this file.")
    references = await references_of(principal.tenant_id, file_id)
    if references:
        raise Conflict(
            f"The file is in use: {', '.join(references)}.",
            details={"references": references},
        )
    async with in_transaction() as conn:
        deleted = await scoped(File, principal.tenant_id).filter(id=file_id).using_db(conn).delete()
        if not deleted:
            raise NotFound("File not found.")
        await emit(principal.tenant_id, "file.deleted", _file_event(row), connection=conn)
    # After the commit: an object without a row is garbage; a row without its object is
    # a broken file.
    await storage_of(ctx.services).delete(row.storage_key)
    return file_id
