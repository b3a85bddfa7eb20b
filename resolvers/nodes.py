"""Node lookups by id for `node(id:)` and `nodes(ids:)`, scoped by the caller's tenant."""

from __future__ import annotations

from typing import Any

from models.tenancy import get_many_scoped
from resolvers.context import Context

MAX_DATABASE_ID = 2**63 - 1  # PostgreSQL's bigint; a larger number would fail the query


def database_id(raw: str) -> int | None:
    """The row id a global id's node part names, or None when it names none (not plain
    decimal digits, zero, or beyond any id the store can hold)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_DATABASE_ID else None


async def load(ctx: Context, model: type[Any], permission: str, ids: list[str]) -> list[Any]:
    principal = ctx.require(permission)
    numeric = [database_id(raw) for raw in ids]
    found = await get_many_scoped(model, principal.tenant_id, [i for i in numeric if i is not None])
    return [None if i is None else found.get(i) for i in numeric]
