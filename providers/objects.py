"""What every object-store backend speaks (local disk, S3-compatible): the interface the
storage service (`resolvers/storage.py`) chooses a backend behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

CHUNK_BYTES = 256 * 1024  # what reads hand out at a time


class ObjectMissing(LookupError):
    """No object under that key."""


class BadRange(ValueError):
    """A byte range outside the object (HTTP 416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for an object of {size} bytes")
        self.size = size


@dataclass(frozen=True)
class ObjectHead:
    key: str
    size: int
    sha256: str | None  # hex, when the store recorded it


@dataclass(frozen=True)
class Stored:
    """What `put` wrote: the object's size and SHA-256 (hex), computed while streaming."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Download:
    """A streamed read of [start, end] (inclusive) of an object of `size` bytes."""

    size: int
    start: int
    end: int
    chunks: AsyncIterator[bytes]

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def resolve_range(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """[start, end] inclusive within an object of `size` bytes; `start=None` means the
    last `end` bytes (a suffix range). BadRange when nothing of it lies in the object."""
    if start is None:
        if end is None or end <= 0 or size == 0:
            raise BadRange(size)
        return max(0, size - end), size - 1
    if start >= size or (end is not None and end < start):
        raise BadRange(size)
    return start, size - 1 if end is None else min(end, size - 1)


class ObjectStore(Protocol):
    """An object store holding private objects under string keys."""

    kind: str

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        """Store the bytes `chunks` yields under `key`. If `chunks` raises, nothing is
        left under `key` (and no partial upload lingers); the error propagates."""
        ...

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> Download: ...

    async def head(self, key: str) -> ObjectHead: ...

    async def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""
        ...

    async def keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (operators and tests; not for request paths)."""
        ...

    async def aclose(self) -> None: ...
