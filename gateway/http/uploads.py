"""Multipart GraphQL requests (the GraphQL multipart request spec) before strawberry sees
them: the CSRF rule, the caller, and a parser that refuses while the body streams.

- CSRF: `multipart/form-data` is a "simple" content type a foreign page's form can send
  with the victim's cookies and no preflight; so a multipart request must carry
  `Apollo-Require-Preflight` or `X-Apollo-Operation-Name` (which no simple request can),
  else 400 `CSRF_PREFLIGHT_REQUIRED`.
- Only a signed-in caller's body is read at all (401 otherwise), so anonymous uploads
  never reach the disk.
- Each file part is spooled to disk as it arrives (`resolvers/spool.py`: hashed and
  sniffed on the way, in the local storage's own directory so that storing it is a
  rename); a part past the largest purpose limit stops the read with 413, more than the
  per-request number of files with 413 too. The resolver then checks the purpose's own
  limit and type on the spooled file and hands it to storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from kit.errors import BadUserInput, GatewayError, PayloadTooLarge, Unauthenticated
from resolvers.spool import Spooled, SpoolWriter

PREFLIGHT_HEADERS = ("apollo-require-preflight", "x-apollo-operation-name")
MAX_FIELDS = 4  # operations, map (and room for a stray field or two)


class PreflightRequired(GatewayError):
    code = "CSRF_PREFLIGHT_REQUIRED"
    http_status = 400


class _TooLarge(MultiPartException):
    pass


class SpooledPart(UploadFile):
    """A file part written to a spool file as it streams: `spooled` (size, SHA-256, sniffed
    type, path) once the part is whole. Closing it removes the spool file unless storage
    took it."""

    def __init__(self, writer: SpoolWriter, filename: str | None, headers: Any) -> None:
        super().__init__(file=None, size=0, filename=filename, headers=headers)  # type: ignore[arg-type]
        self.writer = writer
        self.spooled: Spooled | None = None

    async def write(self, data: bytes) -> None:
        self.size = (self.size or 0) + len(data)
        await self.writer.write(data)

    async def seek(self, offset: int) -> None:
        # Starlette seeks to 0 when the part ended: the moment the spool file is whole.
        # The resolvers take `spooled` (the file on disk), never the part's bytes.
        if self.spooled is None:
            self.spooled = await self.writer.finish()

    async def close(self) -> None:
        self.writer.discard()


class _CappedParser(MultiPartParser):
    """Starlette's streaming parser with a byte limit per file part, spooling file parts
    through `SpoolWriter` into `spool_dir`."""

    def __init__(
        self, *args: Any, max_file_bytes: int, spool_dir: Path | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_file_bytes = max_file_bytes
        self.spool_dir = spool_dir
        self.parts: list[SpooledPart] = []
        self._part_bytes = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part.file
        if part is not None:
            part.file.close()  # Starlette's own spool, unused
            spooled = SpooledPart(
                SpoolWriter(self.spool_dir, part.filename or ""), part.filename, part.headers
            )
            self.parts.append(spooled)
            self._current_part.file = spooled

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._part_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._part_bytes += end - start
            if self._part_bytes > self.max_file_bytes:
                raise _TooLarge(f"A file is larger than {self.max_file_bytes} bytes.")
        super().on_part_data(data, start, end)


def is_multipart(scope: Any) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value[:19].lower() == b"multipart/form-data"
    return False


async def read_multipart(
    request: Request, *, max_files: int, max_file_bytes: int, spool_dir: Path | None
) -> None:
    """Check and parse a multipart GraphQL request; the form is left on `request` (where
    strawberry's `request.form()` finds it). Raises a coded GatewayError."""
    if not any(request.headers.get(h) for h in PREFLIGHT_HEADERS):
        raise PreflightRequired(
            "Multipart requests must carry an Apollo-Require-Preflight or "
            "X-Apollo-Operation-Name header."
        )
    if request.scope.get("state", {}).get("principal") is None:
        raise Unauthenticated()
    parser = _CappedParser(
        request.headers,
        request.stream(),
        max_files=max_files,
        max_fields=MAX_FIELDS,
        max_file_bytes=max_file_bytes,
        spool_dir=spool_dir,
    )
    try:
        try:
            request._form = await parser.parse()
        except BaseException:
            for part in parser.parts:  # nothing half-spooled stays on disk
                await part.close()
            raise
    except _TooLarge as exc:
        raise PayloadTooLarge(exc.message, limit=max_file_bytes) from None
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise PayloadTooLarge(exc.message, limit=max_files) from None
        raise BadUserInput(f"Malformed multipart request: {exc.message}") from None
