"""Keyset pagination for connections: stable under inserts, one query per page."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from tortoise import fields
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

from kit.errors import BadUserInput
from kit.text import text_problem

T = TypeVar("T", bound=Model)


@dataclass(frozen=True)
class Order:
    field: str = "id"
    descending: bool = False


@dataclass
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool
    has_previous: bool
    query: QuerySet[Any] | None = None  # unpaged, for totalCount on demand

    async def total_count(self) -> int:
        return 0 if self.query is None else await self.query.count()


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": "dt", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"t": "d", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {"t": "dec", "v": str(value)}
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def _decode_value(raw: Any) -> Any:
    if isinstance(raw, dict):
        kind, value = raw.get("t"), raw.get("v")
        if kind == "dt":
            return dt.datetime.fromisoformat(str(value))
        if kind == "d":
            return dt.date.fromisoformat(str(value))
        if kind == "dec":
            return Decimal(str(value))
    return raw


def encode_cursor(row: Any, order: Order) -> str:
    """Rows are model objects, or plain dicts from a `fetch` that skips hydration."""
    if isinstance(row, dict):
        value, row_id = row[order.field], row["id"]
    else:
        value, row_id = getattr(row, order.field), row.id
    # The common cases (ordered by id or by a timestamp), byte for byte what json.dumps
    # writes, several times faster: a page encodes one cursor per row.
    if type(row_id) is not int:
        text = json.dumps([_encode_value(value), row_id], separators=(",", ":"))
    elif type(value) is int:
        text = f"[{value},{row_id}]"
    elif type(value) is dt.datetime:
        text = f'[{{"t":"dt","v":"{value.isoformat()}"}},{row_id}]'
    else:
        text = json.dumps([_encode_value(value), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


MAX_ROW_ID = 2**63 - 1


def _bad_cursor() -> BadUserInput:
    return BadUserInput("Invalid cursor.", details={"after": "is not a cursor from this API"})


def decode_cursor(cursor: Any, expected: tuple[type, ...] | None = None) -> tuple[Any, int]:
    """(value, row id) from a cursor this API made for an ordering whose values are of the
    `expected` types; anything else (another list's cursor, a hand-made one, a row id no
    store holds) is BAD_USER_INPUT, never a query that fails in the store."""
    if not isinstance(cursor, str) or not cursor.isascii():
        raise _bad_cursor()
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        raw, row_id = payload
        value = _decode_value(raw)
    except (ValueError, TypeError):  # binascii.Error and JSONDecodeError are ValueErrors
        raise _bad_cursor() from None
    if type(row_id) is not int or not 0 < row_id <= MAX_ROW_ID:
        raise _bad_cursor()
    if expected is not None and type(value) not in expected:
        raise _bad_cursor()
    if isinstance(value, str) and text_problem(value) is not None:
        raise _bad_cursor()
    return value, row_id


_CURSOR_TYPES: dict[type, tuple[type, ...]] = {
    fields.DatetimeField: (dt.datetime,),
    fields.DateField: (dt.date,),
    fields.DecimalField: (Decimal, int),
    fields.BooleanField: (bool,),
    fields.FloatField: (float, int),
}


def cursor_types(model: type[Model], field: str) -> tuple[type, ...]:
    """The types a cursor's value may have when a list of `model` is ordered by `field`."""
    if field == "id":
        return (int,)
    definition = model._meta.fields_map[field]
    for kind, types in _CURSOR_TYPES.items():
        if isinstance(definition, kind):
            found = types
            break
    else:
        if isinstance(definition, fields.IntField | fields.BigIntField | fields.SmallIntField):
            found = (int,)
        else:
            found = (str,)
    return (*found, type(None)) if definition.null else found


def check_page_size(first: int | None, maximum: int, default: int = 20) -> int:
    if first is None:
        return min(default, maximum)
    if first < 0 or first > maximum:
        raise BadUserInput(
            f"first must be between 0 and {maximum}.",
            details={"first": f"must be between 0 and {maximum}"},
        )
    return first


async def paginate(
    query: QuerySet[T],
    *,
    first: int | None,
    after: str | None,
    max_page: int,
    order: Order = Order(),
    fetch: Callable[[QuerySet[T]], Awaitable[list[Any]]] | None = None,
) -> Page[Any]:
    """One page of `query` ordered by (order.field, id), starting after the cursor.

    `fetch` runs the windowed query instead of Tortoise's model hydration, e.g.
    `models.contacts.plain_rows` for hot list reads that want plain dicts.
    """
    limit = check_page_size(first, max_page)
    paged = query
    if after:
        value, last_id = decode_cursor(after, cursor_types(query.model, order.field))
        op = "lt" if order.descending else "gt"
        if order.field == "id":
            paged = paged.filter(**{f"id__{op}": last_id})
        else:
            paged = paged.filter(
                Q(**{f"{order.field}__{op}": value})
                | Q(**{order.field: value, f"id__{op}": last_id})
            )
    prefix = "-" if order.descending else ""
    ordering = [f"{prefix}{order.field}"] + ([f"{prefix}id"] if order.field != "id" else [])
    window = paged.order_by(*ordering).limit(limit + 1)
    rows: list[Any] = []
    if limit:
        rows = list(await (fetch(window) if fetch is not None else window))
    has_next = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=rows,
        cursors=[encode_cursor(r, order) for r in rows],
        has_next=has_next,
        has_previous=after is not None,
        query=query,
    )


NEWEST_FIRST = Order("id", descending=True)


async def page_of(
    ctx: Any,
    query: QuerySet[T],
    *,
    first: int | None,
    after: str | None,
    order: Order = NEWEST_FIRST,
    fetch: Callable[[QuerySet[T]], Awaitable[list[Any]]] | None = None,
) -> Page[Any]:
    """`paginate` with the request's maximum page size (`ctx` is a resolvers Context)."""
    return await paginate(
        query,
        first=first,
        after=after,
        max_page=ctx.settings.max_page_size,
        order=order,
        fetch=fetch,
    )


# A vendor's pages (Google's pageToken, Zoom's next_page_token) as a Relay list --------------

VendorFetch = Callable[[str | None, int], Awaitable[tuple[list[Any], str | None]]]
V = TypeVar("V")


@dataclass
class VendorPage(Generic[V]):
    """A page of a vendor's list (no count: the vendor does not tell)."""

    items: list[V]
    cursors: list[str]
    has_next: bool
    has_previous: bool


_MAX_VENDOR_PAGES = 10  # vendor pages one answer may read (a page of empty pages ends it)


def _vendor_cursor(token: str | None, size: int, index: int) -> str:
    raw = json.dumps({"p": token or "", "m": size, "i": index}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _vendor_position(after: str) -> tuple[str | None, int, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(after.encode()).decode())
        token, size, index = str(data["p"]) or None, int(data["m"]), int(data["i"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadUserInput(
            "Invalid cursor.", details={"after": "is not a cursor of this list"}
        ) from None
    if not 1 <= size <= 300 or index < -1 or (token is not None and len(token) > 2000):
        raise BadUserInput("Invalid cursor.", details={"after": "is not a cursor of this list"})
    return token, size, index


async def vendor_page(
    fetch: VendorFetch, *, first: int | None, after: str | None, max_page: int
) -> VendorPage[Any]:
    """A Relay page over a vendor's token-paged list. `fetch(token, size)` answers one
    vendor page and the next token. A cursor names the vendor page (its token and size)
    and the item's place in it, so `after` resumes exactly there."""
    size = max(1, check_page_size(first, max_page))
    if after:
        token, vendor_size, skip = _vendor_position(after)
    else:
        token, vendor_size, skip = None, min(max(size + 1, 50), 250), -1
    items: list[Any] = []
    cursors: list[str] = []
    for _ in range(_MAX_VENDOR_PAGES):
        got, next_token = await fetch(token, vendor_size)
        for index, item in enumerate(got):
            if index > skip:
                items.append(item)
                cursors.append(_vendor_cursor(token, vendor_size, index))
        if len(items) > size or not next_token:
            break
        token, skip = next_token, -1
    return VendorPage(items[:size], cursors[:size], len(items) > size, bool(after))
