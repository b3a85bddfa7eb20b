"""An upload's bytes spooled to this machine's disk as they arrive, hashed and sniffed on
the way, so storing the file afterwards costs a rename (local storage) or one streamed
read (S3), never a second pass over the bytes in the request's path.

    writer = SpoolWriter(directory, filename)     # directory: storage's spool_dir
    await writer.write(chunk) ...                 # as the request body streams
    spooled = await writer.finish()               # size, SHA-256, sniffed type, path
    await writer.discard()                        # unless storage took the file

Each chunk is written as it comes (a page-cache write, as any handler streaming a body
to disk does); hashing, the costly part, runs in a worker thread a batch at a time while
the event loop goes on parsing and writing the next batch. The writes release the GIL
often, so the hashing thread is never starved of it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from kit.sniff import Sniffer

BATCH_BYTES = 1024 * 1024  # hashed per thread hop; at most two batches are held at once
READ_BYTES = 256 * 1024
# Its own threads: an upload's batches never queue behind other work in the loop's pool.
_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool")


@dataclass(frozen=True)
class Spooled:
    """A whole upload on disk at `path`: `content_type` is what its bytes are (None when
    they are nothing accepted), never what the client claimed."""

    path: Path
    filename: str
    size: int
    sha256: str
    content_type: str | None


class SpoolWriter:
    def __init__(self, directory: Path | None, filename: str) -> None:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
        self.path = Path(name)
        self.filename = filename
        self.size = 0
        self._fd: int | None = fd
        self._digest = hashlib.sha256()
        self._sniffer = Sniffer(filename)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._inflight: list[concurrent.futures.Future[None]] = []
        self._spooled: Spooled | None = None

    async def write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BATCH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        await self._settle()  # the digest must see batches in order
        if not self._pending:
            return
        batch = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        self._inflight = [_THREADS.submit(self._hash, batch)]

    async def _settle(self) -> None:
        if self._inflight:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in self._inflight))
            self._inflight = []

    def _hash(self, batch: bytes) -> None:
        self._digest.update(batch)
        self._sniffer.feed(batch)

    async def finish(self) -> Spooled:
        """Write what is left and describe the whole file (once; later calls repeat it)."""
        if self._spooled is None:
            await self._flush()
            await self._settle()
            self._close_fd()
            self._spooled = Spooled(
                path=self.path,
                filename=self.filename,
                size=self.size,
                sha256=self._digest.hexdigest(),
                content_type=self._sniffer.finish(),
            )
        return self._spooled

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Remove the spooled file (a no-op once storage renamed it into place)."""
        self._close_fd()
        self.path.unlink(missing_ok=True)


async def read_chunks(path: Path, chunk_bytes: int = READ_BYTES) -> AsyncIterator[bytes]:
    """A spooled file's bytes, read in a worker thread a piece at a time."""
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
            yield chunk
    finally:
        handle.close()
