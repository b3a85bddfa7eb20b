"""Files: `uploadFile` (the GraphQL multipart request spec's `Upload` scalar), direct
uploads with a presigned PUT (`createUploadUrl` → `completeUpload`), `files`, `file`,
`deleteFile`. Limits per purpose come from `resolvers.files.POLICIES`."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.file_uploads import Upload
from strawberry.types import Info

from kit.errors import BadUserInput
from models import files as models
from resolvers import files as file_ops
from resolvers.spool import Spooled
from schema.permissions import mutation, query
from schema.relay import After, Connection, First, ModelNode, decode_id, encode_id


@strawberry.enum(description="What a file is for; each purpose has its own types and size limit.")
class FilePurpose(Enum):
    AVATAR = strawberry.enum_value(
        "AVATAR", description="A picture: PNG, JPEG, GIF or WebP, up to 4 MB."
    )
    INVOICE = strawberry.enum_value("INVOICE", description="An invoice: PDF, up to 16 MB.")
    DOCUMENT = strawberry.enum_value(
        "DOCUMENT",
        description="A document: PDF, plain text, Markdown, CSV, Word or Excel, up to 16 MB.",
    )


@strawberry.enum(description="Whether a file's bytes are stored and verified.")
class FileStatus(Enum):
    PENDING = strawberry.enum_value(
        "PENDING", description="A direct upload was started; `completeUpload` has not verified it."
    )
    READY = strawberry.enum_value("READY", description="Stored and verified; downloadable.")


@strawberry.type(description="A file the organization stored. Requires role: any member.")
class File(ModelNode):
    _model: ClassVar[type] = models.File
    _permission: ClassVar[str] = "files:read"
    id: relay.NodeID[int]
    name: str = strawberry.field(
        description="File name, made safe (no directories, control characters or quotes)."
    )
    content_type: str = strawberry.field(
        description="Media type sniffed from the bytes (never the uploader's claim); empty "
        "while PENDING."
    )
    size: int = strawberry.field(description="Size in bytes.")
    sha256: str = strawberry.field(description="SHA-256 of the bytes, hexadecimal.")
    purpose: FilePurpose = strawberry.field(description="What the file is for.")
    status: FileStatus = strawberry.field(description="PENDING until a direct upload is verified.")
    created_at: dt.datetime = strawberry.field(description="When it was created.")

    @classmethod
    def from_row(cls, row: Any) -> File:
        obj = cls(
            id=row.id,
            name=row.name,
            content_type=row.content_type,
            size=row.size,
            sha256=row.sha256,
            purpose=FilePurpose(row.purpose),
            status=FileStatus(row.status),
            created_at=row.created_at,
        )
        obj._row = row  # type: ignore[attr-defined]
        return obj

    @strawberry.field(
        description="A short-lived URL that downloads the bytes (as an attachment); null "
        "while PENDING. Anyone holding it can download until it expires."
    )
    async def download_url(
        self,
        info: Info,
        expires_in_seconds: Annotated[
            int | None,
            strawberry.argument(description="How long the URL works (10 to 86400; default 300)."),
        ] = None,
    ) -> str | None:
        return await file_ops.download_url(info.context, self._row, expires_in_seconds)  # type: ignore[attr-defined]


@strawberry.input(description="A file sent in this request (GraphQL multipart request spec).")
class UploadFileInput:
    file: Upload = strawberry.field(description="The file part of the multipart request.")
    purpose: FilePurpose = strawberry.field(description="What it is for; sets the accepted types.")


@strawberry.type(description="The stored file.")
class UploadFilePayload:
    file: File = strawberry.field(description="The file as stored.")


@strawberry.input(description="A file to upload straight to storage with a presigned PUT.")
class CreateUploadUrlInput:
    name: str = strawberry.field(description="The file's name (made safe).")
    size: int = strawberry.field(description="Exact size in bytes; the upload must match it.")
    sha256: str = strawberry.field(
        description="SHA-256 of the bytes, hexadecimal; the upload must match it."
    )
    purpose: FilePurpose = strawberry.field(
        description="What it is for; sets types and size limit."
    )


@strawberry.type(description="A header the upload request must carry.")
class UploadHeader:
    name: str = strawberry.field(description="Header name.")
    value: str = strawberry.field(description="Header value.")


@strawberry.type(description="Where to PUT the bytes, then call `completeUpload`.")
class CreateUploadUrlPayload:
    file: File = strawberry.field(description="The PENDING file the upload fills.")
    upload_url: str = strawberry.field(description="Send the bytes with an HTTP PUT here.")
    headers: list[UploadHeader] = strawberry.field(
        description="Headers to send with the PUT (size and checksum are bound into the URL)."
    )
    expires_at: dt.datetime = strawberry.field(description="When the URL stops working.")


@strawberry.input(description="The direct upload to verify.")
class CompleteUploadInput:
    file_id: relay.GlobalID = strawberry.field(description="The File `createUploadUrl` made.")


@strawberry.type(description="The verified file.")
class CompleteUploadPayload:
    file: File = strawberry.field(description="The file, READY.")


@strawberry.input(description="The file to delete.")
class DeleteFileInput:
    id: relay.GlobalID = strawberry.field(description="The file to delete.")


@strawberry.type(description="The deleted file's id.")
class DeleteFilePayload:
    deleted_id: relay.GlobalID = strawberry.field(description="Id of the deleted file.")


def spooled_of(value: Any, field: str = "file") -> Spooled:
    """The spooled file of a multipart request's file part; BAD_USER_INPUT when `value`
    is anything else (a value in the variables or the query)."""
    spooled = getattr(value, "spooled", None)
    if not isinstance(spooled, Spooled):
        problem = "send the file as a part of a multipart request (GraphQL multipart spec)"
        raise BadUserInput(f"{field}: {problem}", details={field: problem})
    return spooled


@strawberry.type
class Query:
    @query(operation=file_ops.list_files, description="The organization's files, newest first.")
    async def files(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        purpose: Annotated[
            FilePurpose | None, strawberry.argument(description="Only files of this purpose.")
        ] = None,
    ) -> Connection[File]:
        page = await file_ops.list_files(
            info.context,
            purpose=None if purpose is None else models.FilePurpose[purpose.name],
            first=first,
            after=after,
        )
        return Connection.of(page, File.from_row)

    @query(operation=file_ops.get_file, description="One file by id.")
    async def file(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="The file's id.")],
    ) -> File:
        return File.from_row(await file_ops.get_file(info.context, decode_id(id, "File")))


@strawberry.type
class Mutation:
    @mutation(
        operation=file_ops.upload_file,
        description="Store a file sent as a multipart request (GraphQL multipart request "
        "spec; the request must carry an `Apollo-Require-Preflight` or "
        "`X-Apollo-Operation-Name` header). The bytes decide the type; too large or of a "
        f"type the purpose refuses: PAYLOAD_TOO_LARGE / BAD_USER_INPUT, nothing stored. At "
        f"most {file_ops.MAX_FILES_PER_REQUEST} files per request.",
    )
    async def upload_file(self, info: Info, input: UploadFileInput) -> UploadFilePayload:
        row = await file_ops.upload_file(
            info.context,
            purpose=models.FilePurpose[input.purpose.name],
            upload=spooled_of(input.file),
        )
        return UploadFilePayload(file=File.from_row(row))

    @mutation(
        operation=file_ops.create_upload_url,
        description="Start a direct upload: a presigned PUT URL for exactly `size` bytes "
        "hashing to `sha256`, and the PENDING file it fills; then call `completeUpload`.",
    )
    async def create_upload_url(
        self, info: Info, input: CreateUploadUrlInput
    ) -> CreateUploadUrlPayload:
        ticket = await file_ops.create_upload_url(
            info.context,
            name=input.name,
            size=input.size,
            sha256=input.sha256,
            purpose=models.FilePurpose[input.purpose.name],
        )
        return CreateUploadUrlPayload(
            file=File.from_row(ticket.file),
            upload_url=ticket.url,
            headers=[UploadHeader(name=k, value=v) for k, v in ticket.headers.items()],
            expires_at=ticket.expires_at,
        )

    @mutation(
        operation=file_ops.complete_upload,
        description="Verify a direct upload (size, SHA-256, type sniffed from the bytes) and "
        "make the file READY; bytes that do not match are removed (BAD_USER_INPUT).",
    )
    async def complete_upload(
        self, info: Info, input: CompleteUploadInput
    ) -> CompleteUploadPayload:
        row = await file_ops.complete_upload(info.context, decode_id(input.file_id, "File"))
        return CompleteUploadPayload(file=File.from_row(row))

    @mutation(
        operation=file_ops.delete_file,
        description="Delete a file and its bytes. The uploader may delete their own files; "
        "other members' files need OWNER or MANAGER. A file still in use (an invoice) is "
        "refused with CONFLICT listing what uses it.",
    )
    async def delete_file(self, info: Info, input: DeleteFileInput) -> DeleteFilePayload:
        deleted = await file_ops.delete_file(info.context, decode_id(input.id, "File"))
        return DeleteFilePayload(deleted_id=encode_id("File", deleted))
