"""Tortoise's SQLite client, its transactions giving the connection's lock back when BEGIN
fails or is cancelled (see ``models.engines``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tortoise.backends.base.client import TransactionalDBClient, TransactionContext
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteClientWithRegexpSupport,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
)
from tortoise.connection import get_connections


class _Transaction(SqliteTransactionContext):
    async def __aenter__(self) -> TransactionalDBClient:
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
            self.token = get_connections().set(self.connection_name, self.connection)
            try:
                await self.connection.begin()
            except BaseException:
                get_connections().reset(self.token)
                # aiosqlite runs a queued BEGIN even when its caller is gone: end it,
                # or the next statements would sit in a transaction nobody commits.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.connection._connection.rollback())
                raise
        except BaseException:
            self._trxlock.release()
            raise
        return self.connection


class GuardedSqliteClient(SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return _Transaction(SqliteTransactionWrapper(self), self._lock)


class GuardedSqliteClientWithRegexp(SqliteClientWithRegexpSupport):
    def _in_transaction(self) -> TransactionContext:
        return _Transaction(SqliteTransactionWrapper(self), self._lock)


def get_client_class(db_info: dict[str, Any]) -> type[SqliteClient]:
    """Tortoise's hook for an engine module: the client for this connection's settings."""
    if db_info.get("credentials", {}).get("install_regexp_functions"):
        return GuardedSqliteClientWithRegexp
    return GuardedSqliteClient
