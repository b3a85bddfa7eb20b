"""Node lookups by id for `node(id:)` and `nodes(ids:)`, scoped by the caller's tenant."""

from __future__ import annotations

from typing import Any

from models.tenancy import get_many_scoped
from resolvers.context import Context


async def load(ctx: Context, model: type[Any], permission: str, ids: list[str]) -> list[Any]:
    principal = ctx.require(permission)
    numeric: list[int | None] = []
    for raw in ids:
        try:
            numeric.append(int(raw))
        except ValueError:
            numeric.append(None)
    found = await get_many_scoped(model, principal.tenant_id, [i for i in numeric if i is not None])
    return [None if i is None else found.get(i) for i in numeric]
