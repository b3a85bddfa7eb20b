"""Tortoise's asyncpg client, its transactions giving the pool connection back when BEGIN
fails or is cancelled (see ``models.engines``)."""

from __future__ import annotations

import asyncio
import contextlib

from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.connection import get_connections


class _Transaction(TransactionContextPooled):
    async def __aenter__(self) -> TransactionalDBClient:
        await self.ensure_connection()
        pool = self.client._parent._pool
        self.client._connection = await pool.acquire()
        self.token = get_connections().set(self.connection_name, self.client)
        try:
            await self.client.begin()
        except BaseException:
            get_connections().reset(self.token)
            # asyncpg resets (or, caught mid-query, closes) a connection given back to it.
            with contextlib.suppress(Exception):
                await asyncio.shield(pool.release(self.client._connection))
            raise
        return self.client


class GuardedAsyncpgClient(AsyncpgDBClient):
    def _in_transaction(self) -> TransactionContext:
        return _Transaction(TransactionWrapper(self), self._pool_init_lock)


client_class = GuardedAsyncpgClient
