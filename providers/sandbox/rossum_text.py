"""What the Rossum sandbox "extracts" from a PDF: the fields its own text states.

The sandbox does no OCR. It reads the PDF's text layer (pypdf) and takes the fields from
lines that follow this convention (keys case-insensitive, one field per line, anything
else on the page ignored):

    Invoice number: INV-2026-001
    Vendor: Initech GmbH
    Total: 1,250.00 EUR            (an amount, and optionally a currency code or symbol)
    Currency: EUR                  (optional; else the code in the Total line)
    Issue date: 2026-11-30
    Due date: 2026-12-31
    Item: Widget | 2 | 10.00 | 20.00     (description | quantity | unit price | total)
    Review: required               (optional: the annotation stops at to_review)

Values go into the annotation's datapoints as written (Rossum's standard schema ids:
`document_id`, `sender_name`, `amount_total`, `currency`, `date_issue`, `date_due`, and
`line_items` tuples of `item_description`, `item_quantity`, `item_amount_base`,
`item_amount_total`), so a test can check how the client parses what a document says,
garbled values included. A file that is not a PDF, or a PDF without a text layer, cannot
be read: the annotation goes to `failed_import` with the reason as its message.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("switchboard.sandbox.rossum")

MAX_PAGES = 32  # Rossum's default effective page count
_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z ]{1,30}?)\s*:\s*(.*?)\s*$")
_CURRENCY = re.compile(r"\b([A-Z]{3})\b|([€$£¥])")
_KEYS = {
    "invoice number": "document_id",
    "invoice no": "document_id",
    "vendor": "sender_name",
    "total": "amount_total",
    "currency": "currency",
    "issue date": "date_issue",
    "due date": "date_due",
}


class Unreadable(Exception):
    """The document's text cannot be read (the reason is the annotation's message)."""


@dataclass(slots=True)
class Fields:
    values: dict[str, str] = field(default_factory=dict)
    items: list[list[str]] = field(default_factory=list)
    review: bool = False


def pdf_text(content: bytes) -> str:
    """The text layer of a PDF's first pages; Unreadable when there is none."""
    from pypdf import PdfReader  # imported when a document comes: the sandbox only
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        pages = reader.pages[:MAX_PAGES]
        text = "\n".join(page.extract_text() or "" for page in pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise Unreadable("The file is not a readable PDF document.") from exc
    except Exception as exc:  # a hostile file must fail its import, never the sandbox
        log.warning("pypdf could not read an uploaded document", exc_info=True)
        raise Unreadable("The file is not a readable PDF document.") from exc
    if not text.strip():
        raise Unreadable("No text could be read from the document.")
    return text


def read_fields(text: str) -> Fields:
    """The fields the text states (see the module docstring)."""
    found = Fields()
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        key, value = " ".join(match.group(1).lower().split()), match.group(2)
        if key == "item":
            cells = [c.strip() for c in value.split("|")]
            found.items.append(([*cells, "", "", "", ""])[:4])
        elif key == "review":
            found.review = value.strip().lower() in ("required", "yes", "true")
        elif key in _KEYS and _KEYS[key] not in found.values:
            found.values[_KEYS[key]] = value
    total = found.values.get("amount_total")
    if total is not None and "currency" not in found.values:
        code = _CURRENCY.search(total)
        if code:
            found.values["currency"] = (code.group(1) or code.group(2)).lower()
    if total is not None:  # the amount alone, as Rossum keeps it apart from the currency
        found.values["amount_total"] = _CURRENCY.sub("", total).strip()
    return found


def content_tree(fields: Fields, next_id: Any) -> list[dict[str, Any]]:
    """The annotation content Rossum would answer for these fields (`next_id()` numbers
    the datapoints)."""

    def datapoint(schema_id: str, value: str) -> dict[str, Any]:
        return {
            "id": next_id(),
            "category": "datapoint",
            "schema_id": schema_id,
            "content": {"value": value, "page": 1, "position": None},
            "validation_sources": ["score"],
            "type": "string",
        }

    basic = [
        datapoint(schema_id, fields.values.get(schema_id, ""))
        for schema_id in ("document_id", "date_issue", "date_due")
    ]
    amounts = [
        datapoint(schema_id, fields.values.get(schema_id, ""))
        for schema_id in ("amount_total", "currency")
    ]
    vendor = [datapoint("sender_name", fields.values.get("sender_name", ""))]
    rows = []
    for description, quantity, unit, total in fields.items:
        rows.append(
            {
                "id": next_id(),
                "category": "tuple",
                "schema_id": "line_item",
                "children": [
                    datapoint("item_description", description),
                    datapoint("item_quantity", quantity),
                    datapoint("item_amount_base", unit),
                    datapoint("item_amount_total", total),
                ],
            }
        )
    return [
        {"id": next_id(), "category": "section", "schema_id": "basic_info_section",
         "children": basic},
        {"id": next_id(), "category": "section", "schema_id": "amounts_section",
         "children": amounts},
        {"id": next_id(), "category": "section", "schema_id": "vendor_section",
         "children": vendor},
        {"id": next_id(), "category": "section", "schema_id": "line_items_section",
         "children": [{"id": next_id(), "category": "multivalue", "schema_id": "line_items",
                       "children": rows}]},
    ]  # fmt: skip
