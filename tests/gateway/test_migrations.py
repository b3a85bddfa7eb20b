"""Checked-in migrations build a working store (SQLite, PostgreSQL) and match the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from models import store as db
from models.config import tortoise_config
from tests.conftest import _create_pg_database, _drop_pg_database, make_settings

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_match_models(tmp_path):
    """Tortoise's autodetector finds nothing to migrate: the checked-in migrations are complete."""
    env = {"DATABASE_URL": f"sqlite://{tmp_path}/drift.sqlite3", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main(['makemigrations', '--check'])"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "No changes detected" in out.stdout, (
        "models changed without a migration: run `./dev makemigrations` and commit it\n"
        + out.stdout
    )


def test_migrate_cli_on_fresh_sqlite_then_again(tmp_path):
    env = {"DATABASE_URL": f"sqlite://{tmp_path}/m.sqlite3", "PATH": "/usr/bin:/bin"}
    for _ in range(2):  # the second run must find nothing to do
        out = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "migrate"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr


async def test_migrations_build_every_table_on_postgres():
    url = await _create_pg_database(suffix="mig")
    try:
        await db.migrate(make_settings(database_url=url))
        from tortoise.context import TortoiseContext

        async with TortoiseContext() as ctx:
            await ctx.init(config=tortoise_config(make_settings(database_url=url)))
            conn = ctx.db()
            _, rows = await conn.execute_query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
            )
            tables = {r["table_name"] for r in rows}
            for model in ctx.apps.get_models_iterable():
                assert model._meta.db_table in tables, (
                    f"no migration creates {model._meta.db_table}"
                )
    finally:
        await _drop_pg_database(url)
