"""Group commit: writes of one kind made while a batch of them is being written go out
together, as one batch, in one transaction.

A burst of callers that write at once (streams that start or end together) then costs a
few commits instead of one each plus a queue for the pool's connections. The AI path uses
it for quota reservations, prompt rows and the billing ledger (`resolvers.ai`); the
benchmark that justifies it is `bench/bench_ai_stream.py` (its figures are in
bench/README.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Writes of one kind made while a batch of them is being written go out together,
    as one batch, in one transaction (group commit): a burst of streams that start or
    end at once costs a few commits, not one each plus a queue for the pool's
    connections. A lone write goes at once. Up to `parallel` batches of at most `limit`
    writes are written at the same time (each on its own connection), so a big burst
    does not wait behind one long transaction. A failed batch is written again one
    write at a time, so one bad row fails alone. A caller that goes away does not take
    its write back (it is in a batch already)."""

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        limit: int = 50,
        parallel: int = 4,
    ) -> None:
        self.write = write
        self.limit = limit
        self.parallel = parallel
        self.queue: list[tuple[T, asyncio.Future[R]]] = []
        self.drains: set[asyncio.Future[None]] = set()
        self.loop = asyncio.get_running_loop()

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = self.loop.create_future()
        self.queue.append((item, future))
        if len(self.drains) < self.parallel:
            drain = asyncio.ensure_future(self._drain())
            self.drains.add(drain)
            drain.add_done_callback(self.drains.discard)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue[: self.limit], self.queue[self.limit :]
                try:
                    results = await self.write([item for item, _ in batch])
                except Exception as error:
                    if len(batch) == 1:
                        _settle_future(batch[0][1], error=error)
                        continue
                    for item, future in batch:
                        try:
                            [result] = await self.write([item])
                        except Exception as one:
                            _settle_future(future, error=one)
                        else:
                            _settle_future(future, result)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    _settle_future(future, result)
        finally:
            # At once (not in the done callback, a loop turn later): a write queued from
            # now on must find a free drain slot.
            self.drains.discard(asyncio.current_task())  # type: ignore[arg-type]


def on_running_loop(
    writer: GroupCommit[T, R] | None, write: Callable[[list[T]], Awaitable[list[R]]]
) -> GroupCommit[T, R]:
    """`writer` when it was made on the running event loop, else a new writer for `write`:
    a writer's futures and drain tasks belong to the loop it was made on."""
    if writer is not None and writer.loop is asyncio.get_running_loop():
        return writer
    return GroupCommit(write)


def _settle_future(
    future: asyncio.Future[R], result: Any = None, *, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
