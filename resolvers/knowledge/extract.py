"""Text out of what a knowledge source holds: HTML (reduced to its readable text), PDF
(pypdf), Word .docx (python-docx, after a look at the archive so a zip bomb is refused
before anything is inflated), Markdown and plain text. Bounded everywhere: pages read,
characters kept; NUL bytes and other control characters dropped."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser

from kit import sniff

MAX_TEXT_CHARS = 1_000_000  # text kept from one source
MAX_PDF_PAGES = 500
MAX_DOCX_INFLATED = 50 * 1024 * 1024  # bytes, all parts of the archive together
MAX_DOCX_RATIO = 200  # inflated / compressed, per part
MAX_DOCX_PARTS = 2000
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/x-markdown", *sniff.TEXTS})
SUPPORTED = frozenset({*HTML_TYPES, *TEXT_TYPES, sniff.PDF, sniff.DOCX})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANKS = re.compile(r"[ \t\r\f\v]+")
_MANY_LINES = re.compile(r"\n{3,}")


class Unreadable(Exception):
    """The content is not what it claims, or not readable: the source FAILS with this."""


@dataclass(frozen=True, slots=True)
class Extracted:
    text: str
    title: str = ""


def clean(text: str) -> str:
    text = _CONTROL.sub(" ", text)
    lines = [_BLANKS.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_LINES.sub("\n\n", "\n".join(lines)).strip()[:MAX_TEXT_CHARS]


def extract(content_type: str, data: bytes) -> Extracted:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in HTML_TYPES:
        return html_text(decode(data, content_type))
    if kind in TEXT_TYPES:
        return Extracted(clean(decode(data, content_type)))
    if kind == sniff.PDF:
        return pdf_text(data)
    if kind == sniff.DOCX:
        return docx_text(data)
    raise Unreadable(f"{kind or 'this content'} is not a supported type")


def decode(data: bytes, content_type: str = "") -> str:
    charset = re.search(r"charset=([\w-]+)", content_type, re.I)
    for encoding in ([charset.group(1)] if charset else []) + ["utf-8"]:
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


class _Html(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe"})
    BLOCK = frozenset({
        "p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
        "table", "section", "article", "header", "footer", "blockquote", "pre", "hr",
    })  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skipping: list[str] = []
        self._in_title = False
        self._size = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skipping.append(tag)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif self._skipping and tag == self._skipping[-1]:
            self._skipping.pop()
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skipping and self._size < MAX_TEXT_CHARS:
            self.parts.append(data)
            self._size += len(data)


def html_text(markup: str) -> Extracted:
    parser = _Html()
    try:
        parser.feed(markup)
        parser.close()
    except Exception as exc:  # html.parser is lenient; anything left is unreadable
        raise Unreadable("the HTML could not be read") from exc
    return Extracted(clean("".join(parser.parts)), clean(" ".join(parser.title))[:300])


def pdf_text(data: bytes) -> Extracted:
    if not data.startswith(b"%PDF-"):
        raise Unreadable("not a PDF")
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = []
        size = 0
        for page in reader.pages[:MAX_PDF_PAGES]:
            text = page.extract_text() or ""
            pages.append(text)
            size += len(text)
            if size >= MAX_TEXT_CHARS:
                break
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title)
    except Exception as exc:  # pypdf raises many kinds on a broken file
        raise Unreadable("the PDF could not be read") from exc
    return Extracted(clean("\n\n".join(pages)), clean(title)[:300])


def docx_text(data: bytes) -> Extracted:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise Unreadable("not a Word document") from exc
    if len(infos) > MAX_DOCX_PARTS:
        raise Unreadable("the Word document has too many parts")
    if sum(i.file_size for i in infos) > MAX_DOCX_INFLATED or any(
        i.file_size > MAX_DOCX_RATIO * max(i.compress_size, 1) and i.file_size > 1024 * 1024
        for i in infos
    ):
        raise Unreadable("the Word document inflates too much")
    from docx import Document

    try:
        document = Document(io.BytesIO(data))
        parts = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                parts.append(" | ".join(cell.text for cell in row.cells))
        title = document.core_properties.title or ""
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors...
        raise Unreadable("the Word document could not be read") from exc
    return Extracted(clean("\n\n".join(parts)), clean(title)[:300])


# Chunks ---------------------------------------------------------------------------------

CHUNK_CHARS = 900
OVERLAP_CHARS = 150
MAX_CHUNKS = 2000  # per source


def chunk(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Pieces of about `size` characters, cut at paragraph, then sentence, then word ends,
    each repeating the last `overlap` characters of the one before (so an answer cut in
    two is whole in one of them)."""
    text = text.strip()
    out: list[str] = []
    start = 0
    while start < len(text) and len(out) < MAX_CHUNKS:
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start:end]
            cut = max(window.rfind("\n\n"), window.rfind(". "), window.rfind("\n"))
            if cut < size // 2:
                cut = window.rfind(" ")
            if cut > size // 3:
                end = start + cut + 1
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        if end >= len(text):
            break
        back = text.rfind(" ", max(start + 1, end - overlap), end)
        start = back + 1 if back > start else end
    return out
