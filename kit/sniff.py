"""What a file really is, decided from its bytes (never the client's claim).

Feed the bytes as they stream (`Sniffer.feed`), then `finish()` gives the content type, or
None for anything not recognised. Recognised: PDF, PNG, JPEG, GIF, WebP by their magic
numbers; DOCX and XLSX as a ZIP holding `[Content_Types].xml` and the Word or Excel part;
and UTF-8 text without NUL bytes (text/markdown or text/csv when the name says so,
text/plain otherwise). An executable, a bare ZIP or binary junk is None.
"""

from __future__ import annotations

import codecs

HEAD_BYTES = 16  # enough for every magic number below

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
GIF = "image/gif"
WEBP = "image/webp"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TEXT = "text/plain"
MARKDOWN = "text/markdown"
CSV = "text/csv"

IMAGES = frozenset({PNG, JPEG, GIF, WEBP})
TEXTS = frozenset({TEXT, MARKDOWN, CSV})

# Names a ZIP's local file headers carry in clear; an OOXML file has these.
_OOXML_TYPES = b"[Content_Types].xml"
_OOXML_PARTS = {b"word/document.xml": DOCX, b"xl/workbook.xml": XLSX}
_LONGEST_NAME = max(len(_OOXML_TYPES), *(len(n) for n in _OOXML_PARTS))


def magic(head: bytes) -> str | None:
    """The type the first bytes announce; "zip" for any ZIP, "text" for a text candidate."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"MZ") or head.startswith(b"\x7fELF"):
        return None  # executables are never text, whatever follows
    return "text"


def text_type(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith((".md", ".markdown")):
        return MARKDOWN
    if lower.endswith(".csv"):
        return CSV
    return TEXT


class Sniffer:
    """Decides a stream's type as it passes; keeps only a few bytes of it."""

    def __init__(self, filename: str = "") -> None:
        self.filename = filename
        self.head = b""
        self.kind: str | None = None  # known once HEAD_BYTES (or the end) arrived
        self.decided = False
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text_ok = True
        self._tail = b""  # the last bytes of the previous chunk, for names split across
        self._zip_names: set[bytes] = set()
        self._pending = b""  # what arrived before HEAD_BYTES did

    @property
    def refused(self) -> bool:
        """True as soon as the bytes can no longer be anything recognised."""
        return self.decided and (self.kind is None or (self.kind == "text" and not self._text_ok))

    def feed(self, chunk: bytes) -> None:
        if not self.decided:
            self._pending += chunk
            if len(self._pending) < HEAD_BYTES:
                return
            chunk, self._pending = self._pending, b""
            self.head = chunk[:HEAD_BYTES]
            self._decide()
        self._scan(chunk)

    def _scan(self, chunk: bytes) -> None:
        if self.kind == "text" and self._text_ok:
            self._text(chunk, final=False)
        elif self.kind == "zip":
            window = self._tail + chunk
            for name in (_OOXML_TYPES, *_OOXML_PARTS):
                if name in window:
                    self._zip_names.add(name)
            self._tail = window[-_LONGEST_NAME:]

    def _decide(self) -> None:
        self.kind = magic(self.head)
        self.decided = True

    def _text(self, chunk: bytes, *, final: bool) -> None:
        if b"\x00" in chunk:
            self._text_ok = False
            return
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            self._text_ok = False

    def finish(self) -> str | None:
        """The content type of everything fed, or None when it is not one we accept."""
        if not self.decided:
            self.head, pending, self._pending = self._pending, self._pending, b""
            self._decide()
            self._scan(pending)
        if self.kind == "text":
            if self._text_ok:
                self._text(b"", final=True)
            return text_type(self.filename) if self._text_ok and self.head else None
        if self.kind == "zip":
            if _OOXML_TYPES not in self._zip_names:
                return None
            found = [t for n, t in _OOXML_PARTS.items() if n in self._zip_names]
            return found[0] if len(found) == 1 else None
        return self.kind


def sniff(data: bytes, filename: str = "") -> str | None:
    """The content type of a whole body at once."""
    s = Sniffer(filename)
    s.feed(data)
    return s.finish()
