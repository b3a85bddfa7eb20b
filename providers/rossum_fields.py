"""Rossum's extracted content as plain invoice data (`ExtractedInvoice`).

Rossum answers an annotation's content (`GET /annotations/{id}/content`, or a queue's JSON
export) as a tree: sections whose `children` are datapoints (`{"category": "datapoint",
"schema_id": "document_id", "content": {"value": "INV-1"}}`; the export puts `value` on
the datapoint itself) and multivalues (`line_items`) of tuples of datapoints. The schema
ids read here are Rossum's standard invoice schema's:

| field            | schema ids (first one found wins)                     |
|------------------|-------------------------------------------------------|
| invoice number   | `document_id`, `invoice_id`                           |
| vendor name      | `sender_name`                                         |
| total amount     | `amount_total`, `amount_due`                          |
| currency         | `currency` (else an ISO code or symbol in the total)  |
| issue date       | `date_issue`                                          |
| due date         | `date_due`                                            |
| line item        | `item_description`, `item_quantity`, `item_amount_base`  |
|                  | (unit price), `item_amount_total` (else `item_amount`) |

Every value that does not parse is None, never an exception: an OCR'd "1,25O.00" is a
missing total for a person to fill in, not a failed invoice. Amounts are `Decimal`
parsed from the text (never through float), in either "1,250.00" or "1.250,00" style.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# Symbols Rossum (or a document) may give instead of an ISO 4217 code.
_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "kč": "CZK"}
_ISO_CODE = re.compile(r"\b([A-Za-z]{3})\b")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_MAX_AMOUNT_CHARS = 40  # longer is not an amount (and Decimal would parse it slowly)
_MAX_TEXT = 1000


@dataclass(frozen=True, slots=True)
class LineItem:
    description: str | None
    quantity: Decimal | None
    unit_price: Decimal | None
    total: Decimal | None


@dataclass(frozen=True, slots=True)
class ExtractedInvoice:
    invoice_number: str | None
    vendor_name: str | None
    total_amount: Decimal | None
    currency: str | None  # ISO 4217, upper case
    issue_date: dt.date | None
    due_date: dt.date | None
    line_items: list[LineItem] = field(default_factory=list)


def parse_amount(value: Any) -> Decimal | None:
    """`"1,250.00"`, `"1.250,00 EUR"`, `"€ 12,50"`, `"-3"` → Decimal; None when it is not
    one amount. A lone separator followed by exactly three digits is a thousands one
    (`"1,250"` is 1250), otherwise a decimal one (`"12,50"`)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return None  # a float has already lost the amount's exact digits
    text = text.strip()
    if not text or len(text) > _MAX_AMOUNT_CHARS:
        return None
    for symbol in _CURRENCY_SYMBOLS:
        text = text.replace(symbol, "").replace(symbol.upper(), "")
    text = re.sub(r"[A-Za-z]{3}", "", text)  # an ISO code before or after the number
    text = re.sub(r"[\s'\u00a0\u202f]", "", text)  # spaces and apostrophes group digits
    negative = text.startswith("-") or (text.startswith("(") and text.endswith(")"))
    text = text.strip("-()")
    if "," in text and "." in text:
        decimal_sep = "," if text.rfind(",") > text.rfind(".") else "."
        thousands = "." if decimal_sep == "," else ","
        text = text.replace(thousands, "").replace(decimal_sep, ".")
    elif "," in text or "." in text:
        sep = "," if "," in text else "."
        head, _, tail = text.rpartition(sep)
        if text.count(sep) > 1 or len(tail) == 3:
            # Grouping ("1,250", "1.250.000"): every group after the first has 3 digits.
            groups = text.split(sep)
            if not all(len(g) == 3 for g in groups[1:]) or not groups[0]:
                return None
            text = "".join(groups)
        else:
            text = f"{head}.{tail}"
    if not _NUMBER.match(text):
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return -amount if negative else amount


def parse_currency(value: Any) -> str | None:
    """An ISO 4217 code (upper case) from `"eur"`, `"EUR"`, `"€"` or `"1,250.00 EUR"`."""
    if not isinstance(value, str) or len(value) > _MAX_AMOUNT_CHARS:
        return None
    text = value.strip()
    lowered = text.lower()
    for symbol, code in _CURRENCY_SYMBOLS.items():
        if symbol in lowered:
            return code
    match = _ISO_CODE.search(text)
    return match.group(1).upper() if match else None


def parse_date(value: Any) -> dt.date | None:
    """`2026-11-30` (what Rossum normalises dates to), or `30.11.2026`; None otherwise
    (slashed dates are left out: 01/02/2026 is January in one country, February in
    another)."""
    if not isinstance(value, str):
        return None
    text = value.strip()[:40]
    for pattern in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    try:  # an ISO timestamp: its date
        return dt.datetime.fromisoformat(text).date()
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = " ".join(str(value).split())[:_MAX_TEXT]
    return text or None


def _value(datapoint: Mapping[str, Any]) -> Any:
    """A datapoint's value: `content.value` (annotation content) or `value` (export)."""
    content = datapoint.get("content")
    if isinstance(content, Mapping) and "value" in content:
        return content.get("value")
    return datapoint.get("value")


def _nodes(tree: Any, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """Every node of the content tree, depth first (bounded: content is the vendor's)."""
    if depth > 20:
        return
    if isinstance(tree, list):
        for item in tree:
            yield from _nodes(item, depth + 1)
    elif isinstance(tree, Mapping):
        yield tree
        yield from _nodes(tree.get("children"), depth + 1)


def _first(values: Mapping[str, Any], *schema_ids: str) -> Any:
    for schema_id in schema_ids:
        value = values.get(schema_id)
        if value not in (None, ""):
            return value
    return None


def _datapoints(tree: Any) -> dict[str, Any]:
    """schema id → value of the first non-empty datapoint outside line items."""
    values: dict[str, Any] = {}
    for node in _nodes(tree):
        if node.get("category") == "multivalue" and node.get("schema_id") == "line_items":
            continue
        if node.get("category") == "datapoint" and isinstance(node.get("schema_id"), str):
            value = _value(node)
            if value not in (None, "") and node["schema_id"] not in values:
                values[node["schema_id"]] = value
    return values


def _line_items(tree: Any) -> list[LineItem]:
    items: list[LineItem] = []
    for node in _nodes(tree):
        if node.get("category") != "multivalue" or node.get("schema_id") != "line_items":
            continue
        for row in node.get("children") or []:
            if not isinstance(row, Mapping):
                continue
            cells = {
                str(cell.get("schema_id")): _value(cell)
                for cell in _nodes(row.get("children"))
                if cell.get("category") == "datapoint"
            }
            item = LineItem(
                description=_text(cells.get("item_description")),
                quantity=parse_amount(cells.get("item_quantity")),
                unit_price=parse_amount(cells.get("item_amount_base")),
                total=parse_amount(_first(cells, "item_amount_total", "item_amount")),
            )
            if any(v is not None for v in (item.description, item.quantity, item.total)):
                items.append(item)
    return items


def extract_invoice(content: Any) -> ExtractedInvoice:
    """The invoice fields from an annotation's content tree (see the module docstring)."""
    values = _datapoints(content)
    total = _first(values, "amount_total", "amount_due")
    currency = parse_currency(values.get("currency")) or parse_currency(total)
    return ExtractedInvoice(
        invoice_number=_text(_first(values, "document_id", "invoice_id")),
        vendor_name=_text(values.get("sender_name")),
        total_amount=parse_amount(total),
        currency=currency,
        issue_date=parse_date(values.get("date_issue")),
        due_date=parse_date(values.get("date_due")),
        line_items=_line_items(content),
    )
