"""Multipart GraphQL requests (the GraphQL multipart request spec) before strawberry sees
them: the CSRF rule, the caller, and a parser that refuses while the body streams.

- CSRF: `multipart/form-data` is a "simple" content type a foreign page's form can send
  with the victim's cookies and no preflight; so a multipart request must carry
  `Apollo-Require-Preflight` or `X-Apollo-Operation-Name` (which no simple request can),
  else 400 `CSRF_PREFLIGHT_REQUIRED`.
- Only a signed-in caller's body is read at all (401 otherwise), so anonymous uploads
  never reach the disk.
- Each file part is spooled (to memory up to 1 MiB, then to a temporary file, never the
  whole body in memory); a part past the largest purpose limit stops the read with 413,
  more than the per-request number of files with 413 too. The resolver then streams the
  spooled part to storage, checking the purpose's own limit and type as it goes.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from kit.errors import BadUserInput, GatewayError, PayloadTooLarge, Unauthenticated

PREFLIGHT_HEADERS = ("apollo-require-preflight", "x-apollo-operation-name")
MAX_FIELDS = 4  # operations, map (and room for a stray field or two)


class PreflightRequired(GatewayError):
    code = "CSRF_PREFLIGHT_REQUIRED"
    http_status = 400


class _TooLarge(MultiPartException):
    pass


class _SpooledUpload(UploadFile):
    """A file part spooled to this machine's temporary file: written and read in place.
    Starlette hands every chunk of a rolled-over part to a worker thread (one hop per
    64 KiB, which made a 16 MB upload spend most of its time switching threads); writing
    to the page cache takes microseconds, less than the hop itself."""

    @property
    def _in_memory(self) -> bool:
        return True

    def _will_roll(self, size_to_add: int) -> bool:
        return False


class _CappedParser(MultiPartParser):
    """Starlette's streaming parser with a byte limit per file part."""

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part.file
        if part is not None:
            self._current_part.file = _SpooledUpload(
                file=part.file, size=0, filename=part.filename, headers=part.headers
            )

    def __init__(self, *args: Any, max_file_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_file_bytes = max_file_bytes
        self._part_bytes = 0

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


async def read_multipart(request: Request, *, max_files: int, max_file_bytes: int) -> None:
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
    )
    try:
        request._form = await parser.parse()
    except _TooLarge as exc:
        raise PayloadTooLarge(exc.message, limit=max_file_bytes) from None
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise PayloadTooLarge(exc.message, limit=max_files) from None
        raise BadUserInput(f"Malformed multipart request: {exc.message}") from None
