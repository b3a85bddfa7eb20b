"""resolvers/group_commit.py: writes queued while a batch is out go together; a failed batch
is written again one write at a time; every caller gets its own write's result."""

from __future__ import annotations

import asyncio

import pytest

from resolvers.group_commit import GroupCommit


class Recorder:
    """A write function that records its batches and holds each one until released, so a
    test decides what queues behind a batch in flight (no timing involved)."""

    def __init__(self, bad: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.bad = bad
        self.gate = asyncio.Event()

    async def write(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.bad.intersection(items):
            raise ValueError(f"bad row in {items}")
        return [i * 10 for i in items]

    async def started(self, count: int) -> None:
        while len(self.batches) < count:
            await asyncio.sleep(0)


async def test_a_lone_write_goes_at_once_and_writes_queued_behind_it_go_together():
    recorder = Recorder()
    writer: GroupCommit[int, int] = GroupCommit(recorder.write, parallel=1)
    first = asyncio.ensure_future(writer(1))
    await recorder.started(1)
    queued = [asyncio.ensure_future(writer(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == 10
    assert await asyncio.gather(*queued) == [20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]
    assert not writer.drains


async def test_batches_are_at_most_limit_writes():
    recorder = Recorder()
    writer: GroupCommit[int, int] = GroupCommit(recorder.write, limit=2, parallel=1)
    first = asyncio.ensure_future(writer(0))
    await recorder.started(1)
    queued = [asyncio.ensure_future(writer(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert [await first, *await asyncio.gather(*queued)] == [0, 10, 20, 30, 40, 50]
    assert recorder.batches == [[0], [1, 2], [3, 4], [5]]


async def test_a_failed_batch_is_written_again_one_write_at_a_time():
    recorder = Recorder(bad=frozenset({13}))
    writer: GroupCommit[int, int] = GroupCommit(recorder.write, parallel=1)
    first = asyncio.ensure_future(writer(1))
    await recorder.started(1)
    queued = [asyncio.ensure_future(writer(i)) for i in (2, 13, 4)]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == 10
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError)
    assert recorder.batches == [[1], [2, 13, 4], [2], [13], [4]]


async def test_a_lone_failed_write_fails_its_caller():
    recorder = Recorder(bad=frozenset({7}))
    recorder.gate.set()
    writer: GroupCommit[int, int] = GroupCommit(recorder.write)
    with pytest.raises(ValueError):
        await writer(7)
    assert recorder.batches == [[7]]
    assert await writer(8) == 80  # the writer keeps working


async def test_each_caller_gets_its_own_result_in_order():
    async def write(items: list[str]) -> list[str]:
        await asyncio.sleep(0)
        return [item.upper() for item in items]

    writer: GroupCommit[str, str] = GroupCommit(write, limit=3, parallel=2)
    words = [f"w{i}" for i in range(20)]
    assert await asyncio.gather(*(writer(w) for w in words)) == [w.upper() for w in words]
    assert not writer.drains


async def test_a_caller_that_goes_away_does_not_take_its_write_back():
    recorder = Recorder()
    writer: GroupCommit[int, int] = GroupCommit(recorder.write, parallel=1)
    first = asyncio.ensure_future(writer(1))
    await recorder.started(1)
    gone = asyncio.ensure_future(writer(2))  # queued behind the batch in flight
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    recorder.gate.set()
    assert await first == 10
    assert await writer(3) == 30
    assert recorder.batches[:2] == [[1], [2]]  # written all the same
