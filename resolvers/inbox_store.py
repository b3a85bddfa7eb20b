"""An incoming webhook's inbox row and its processing job, stored at once or not at all.

The portable path is one transaction (the row, then `enqueue` on its connection). On
PostgreSQL the hot path is ONE statement: a data-modifying CTE inserts the row (`ON
CONFLICT … DO NOTHING` for a duplicate event) and its job together, atomic without
BEGIN/COMMIT round trips. It exists for `bench/bench_webhooks_in.py` (target: ≥ 0.5× a
raw Starlette handler that inserts one row; figures in bench/README.md); tests/
test_inbox_store.py checks both paths store the same rows.
"""

from __future__ import annotations

from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.jobs import Job
from models.webhooks import WebhookInbox
from resolvers.jobs import enqueue, new_job, wake_workers

PROCESS_JOB = "webhooks.process_inbox"


async def store(row: WebhookInbox) -> bool:
    """Store `row` (unsaved) and its processing job; False when the event (provider,
    source, event id) is already stored, in which case nothing is written."""
    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        return await _store_postgres(conn, row)
    return await _store_portable(row)


async def _store_portable(row: WebhookInbox) -> bool:
    """Inbox row and its job in one transaction; False when the event is already stored."""
    try:
        async with in_transaction() as conn:
            await row.save(using_db=conn)
            await enqueue(
                PROCESS_JOB, {"inbox_id": row.id}, tenant_id=row.tenant_id, connection=conn
            )
    except IntegrityError:
        return False
    return True


def _columns(obj: Model, skip: tuple[str, ...] = ()) -> tuple[list[str], list[Any]]:
    """Column names and database values of an unsaved instance (defaults applied), from
    the model's own field list so new columns are included automatically."""
    meta = obj._meta
    names, values = [], []
    for name, column in meta.fields_db_projection.items():
        if name == meta.pk_attr or name in skip:
            continue
        names.append(column)
        values.append(meta.fields_map[name].to_db_value(getattr(obj, name), obj))
    return names, values


async def _store_postgres(conn: BaseDBAsyncClient, row: WebhookInbox) -> bool:
    """The hot path on PostgreSQL: inbox row and job in ONE statement (a data-modifying
    CTE is atomic without BEGIN/COMMIT round trips); a duplicate inserts neither."""
    # The job row as enqueue() would store it; its payload (the inbox id) is set in SQL.
    job = new_job(PROCESS_JOB, {}, tenant_id=row.tenant_id)
    inbox_cols, inbox_values = _columns(row)
    job_cols, job_values = _columns(job, skip=("payload",))
    n = len(inbox_values)
    inbox_params = ", ".join(f"${i + 1}" for i in range(n))
    job_params = ", ".join(f"${n + i + 1}" for i in range(len(job_values)))
    # Identifiers come from the models' metadata, every value is a bound parameter.
    inbox_table, job_table = WebhookInbox._meta.db_table, Job._meta.db_table
    sql = (
        f'WITH ins AS (INSERT INTO "{inbox_table}" ({", ".join(inbox_cols)}) '  # noqa: S608
        f"VALUES ({inbox_params}) "
        "ON CONFLICT (provider, source_key, event_id) DO NOTHING RETURNING id), "
        f'job AS (INSERT INTO "{job_table}" ({", ".join(job_cols)}, payload) '
        f"SELECT {job_params}, jsonb_build_object('inbox_id', ins.id) FROM ins RETURNING id) "
        "SELECT ins.id FROM ins, job"
    )
    _, result = await conn.execute_query(sql, [*inbox_values, *job_values])
    if not result:
        return False
    row.id = result[0]["id"]
    row._saved_in_db = True
    wake_workers(conn)
    return True
