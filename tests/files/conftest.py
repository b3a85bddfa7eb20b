"""Files test fixtures: an S3 server (moto's server mode on a free port) and storage
services over it and over a temporary directory."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from kit.settings import Settings
from resolvers.storage import Storage, build_storage
from tests.conftest import free_port, make_settings

BUCKET = "switchboard-files"
KEYS = {"s3_access_key_id": "testing-key", "s3_secret_access_key": "testing-secret"}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_settings(moto_url: str, **overrides: Any) -> Settings:
    return make_settings(
        storage_url=f"s3://{BUCKET}?endpoint={moto_url}&region=us-east-1&path_style=true",
        **KEYS,
        **overrides,
    )


async def make_bucket(storage: Storage) -> None:
    s3 = await storage.backend._s3()  # type: ignore[attr-defined]
    try:
        await s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


@pytest.fixture(params=["file", "s3"])
async def backend_settings(request: Any, tmp_path: Path) -> Settings:
    """Settings for each backend (no store needed)."""
    if request.param == "file":
        return make_settings(storage_url=f"file://{tmp_path / 'objects'}")
    return s3_settings(request.getfixturevalue("moto_url"))


@pytest.fixture
async def storage(backend_settings: Settings) -> AsyncIterator[Storage]:
    built = build_storage(backend_settings)
    if built.kind == "s3":
        await make_bucket(built)
    yield built
    await built.aclose()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def settings(store: Any, tmp_path: Path) -> Settings:
    """The gateway's settings with its objects in a temporary directory."""
    return make_settings(database_url=store.url, storage_url=f"file://{tmp_path / 'objects'}")
