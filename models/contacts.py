"""CRM contacts: people a tenant does business with."""

import datetime as dt
from collections.abc import Sequence
from typing import Any

from tortoise import fields
from tortoise.queryset import QuerySet

from models.base import TenantModel


class Contact(TenantModel):
    name = fields.CharField(max_length=200)
    email = fields.CharField(max_length=320, default="")  # lower-cased; "" when unknown
    phone = fields.CharField(max_length=50, default="")
    company = fields.CharField(max_length=200, default="")
    notes = fields.TextField(default="")
    owner: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    owner_id: int | None
    # Id of the row in the tenant's external CRM (sync by upsert); unique per tenant.
    external_id = fields.CharField(max_length=200, null=True)

    class Meta:
        table = "crm_contacts"
        unique_together = (("tenant_id", "external_id"),)
        indexes = (("tenant_id", "name"), ("tenant_id", "owner_id"))


# Plain-row reads for the CRM's hot list paths -------------------------------------------


def _to_datetime(value: Any) -> dt.datetime | None:
    """A stored datetime as an aware datetime (SQLite keeps ISO text, PostgreSQL datetimes)."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


async def plain_rows(qs: QuerySet[Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of `qs` as plain dicts of `columns`, without building model objects.

    For list reads and DataLoaders, where hydrating Tortoise objects (and Tortoise's
    per-value conversion: iso8601 parsing, time-zone juggling) costs several times the
    query. `qs` is built by the caller through `models.tenancy.scoped`, so the tenant
    filter, ordering and limit are in the SQL exactly as for `await qs`. Values are
    as stored, except datetimes (aware, UTC) and decimals, converted here.
    """
    query = qs.values_list(*columns)
    query._choose_db_if_not_chosen()
    query._make_query()
    sql, params = query.query.get_parameterized_sql()
    _, rows = await query._db.execute_query(sql, params)
    fields_map = qs.model._meta.fields_map
    converters = [
        (i, _to_datetime)
        if isinstance(fields_map.get(c), fields.DatetimeField)
        else (i, fields_map[c].to_python_value)
        if isinstance(fields_map.get(c), fields.DecimalField)
        else None
        for i, c in enumerate(columns)
    ]
    convert = [c for c in converters if c is not None]
    out = []
    for row in rows:
        values = list(row.values()) if isinstance(row, dict) else list(row)
        for i, fn in convert:
            values[i] = fn(values[i])
        out.append(dict(zip(columns, values, strict=True)))
    return out
