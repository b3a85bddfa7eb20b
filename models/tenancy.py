"""The one place that scopes reads and writes by tenant.

Every tenant-owned query starts here, so a foreign id is simply not found:
`NOT_FOUND`, never another tenant's row, never a hint that it exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tortoise.queryset import QuerySet

from kit.errors import NotFound
from models.base import TenantModel

M = TypeVar("M", bound=TenantModel)


def scoped(model: type[M], tenant_id: int) -> QuerySet[M]:
    return model.filter(tenant_id=tenant_id)


async def get_scoped(model: type[M], tenant_id: int, id: int, *, for_update: bool = False) -> M:
    qs = model.filter(tenant_id=tenant_id, id=id)
    if for_update:
        qs = qs.select_for_update()
    obj = await qs.first()
    if obj is None:
        raise NotFound(f"{model.__name__} not found.")
    return obj


async def get_many_scoped(model: type[M], tenant_id: int, ids: Iterable[int]) -> dict[int, M]:
    ids = list(set(ids))
    if not ids:
        return {}
    rows = await model.filter(tenant_id=tenant_id, id__in=ids)
    return {row.id: row for row in rows}
