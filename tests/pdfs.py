"""Invoice PDFs for the tests, written with reportlab (a writer independent of pypdf, the
reader the Rossum sandbox uses), in the sandbox's text convention
(providers/sandbox/rossum_text.py)."""

from __future__ import annotations

import io

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas


def text_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose text layer holds `lines`, one per line."""
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    y = 800
    for line in lines:
        page.drawString(60, y, line)
        y -= 18
    page.showPage()
    page.save()
    return buffer.getvalue()


def invoice_pdf(number: str = "INV-2026-001", **overrides: str) -> bytes:
    lines = {
        "Invoice number": number,
        "Vendor": "Initech GmbH",
        "Total": "1,250.00 EUR",
        "Issue date": "2026-11-30",
        "Due date": "2026-12-31",
    }
    lines.update(overrides)
    return text_pdf(
        ["INVOICE", *(f"{k}: {v}" for k, v in lines.items() if v),
         "Item: Widget | 2 | 10.00 | 20.00",
         "Item: Consulting, senior | 12.5 | 98.40 | 1,230.00",
         "Thank you for your business."]
    )  # fmt: skip


def blank_pdf() -> bytes:
    """A valid PDF with a drawing and no text at all (a scan without OCR, say)."""
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    page.rect(100, 100, 200, 300, fill=1)
    page.showPage()
    page.save()
    return buffer.getvalue()
