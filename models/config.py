"""Tortoise's configuration from the settings: the store's URL and every model module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tortoise.backends.base.config_generator import expand_db_url

from kit.settings import Settings
from models import MODEL_MODULES


def tortoise_config(settings: Settings) -> dict[str, Any]:
    url = settings.database_url
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    else:
        if url.startswith("postgresql://"):
            url = "postgres://" + url.removeprefix("postgresql://")
        # Tortoise's asyncpg pool defaults to 5 connections: too few for the worker's
        # concurrent jobs plus requests. An explicit maxsize in the URL wins.
        if "maxsize=" not in url:
            url += ("&" if "?" in url else "?") + f"maxsize={settings.database_pool_size}"
    connection = expand_db_url(url)
    driver = connection["engine"].rsplit(".", 1)[-1]
    if driver in ("sqlite", "asyncpg"):
        # Tortoise's clients with transactions that survive cancellation (models/engines/).
        connection["engine"] = f"models.engines.{driver}"
    return {
        "connections": {"default": connection},
        "apps": {
            "switchboard": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": "models.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }
