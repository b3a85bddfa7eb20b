"""Store lifecycle: open Tortoise, apply migrations, close.

Tortoise 1.x keeps its state in a `TortoiseContext` held in a contextvar. The
store is opened in the lifespan task but used from request tasks, so the
context is registered as the process-wide fallback.
"""

from __future__ import annotations

import logging
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.context import TortoiseContext
from tortoise.migrations.api.migrate import migrate as migrate_api

from kit.settings import Settings
from models.config import tortoise_config

log = logging.getLogger("switchboard.db")
_context: TortoiseContext | None = None


async def migrate(settings: Settings) -> None:
    """Apply pending migrations (idempotent), in a context of its own."""
    async with TortoiseContext():
        await migrate_api(config=tortoise_config(settings))


class MigrationsPending(RuntimeError):
    """Production will not serve a store its code does not match."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            f"{len(names)} database migration(s) pending ({', '.join(names)}); "
            "run `switchboard migrate` first"
        )
        self.names = names


async def pending_migrations(settings: Settings) -> list[str]:
    """Migrations the store has not applied yet (`app.name`), nothing changed."""
    pending: list[str] = []

    def report(_connection: str, plan: list[Any], _fake: bool, _dry_run: bool) -> None:
        pending.extend(
            f"{step.migration.app_label}.{step.migration.name}"
            for step in plan
            if not step.backward
        )

    async with TortoiseContext():
        await migrate_api(config=tortoise_config(settings), dry_run=True, reporter=report)
    return pending


async def open_store(settings: Settings, *, apply_migrations: bool = False) -> None:
    global _context
    if apply_migrations:
        await migrate(settings)
    if _context is not None:
        return
    ctx = TortoiseContext()
    # Entered only while initialising (init needs a current context); afterwards every
    # task, whatever context it copied, reaches the store through the global fallback.
    with ctx:
        await ctx.init(config=tortoise_config(settings), _enable_global_fallback=True)
    _context = ctx


async def close_store() -> None:
    global _context
    if _context is not None:
        ctx, _context = _context, None
        await ctx.close_connections()
    # Tortoise caches INSERT statements per connection *name*, not per dialect; a store
    # reopened on another backend (the test suite does SQLite, then PostgreSQL) would
    # reuse SQLite's placeholders.
    EXECUTOR_CACHE.clear()


async def store_ready() -> bool:
    try:
        conn = Tortoise.get_connection("default")
        await conn.execute_query("SELECT 1")
        return True
    except Exception:
        log.warning("store not reachable", exc_info=True)
        return False
