"""Ids the gateway hands out before their rows are inserted (hi/lo over the store's own
counter).

The AI stream's first event names its conversation and its answer while their rows are
still being written; those ids come from an `IdBlock`: a stock of ids per table and per
process, reserved from the table's own id counter in one statement per block:

- PostgreSQL: `nextval` of the column's serial sequence, `n` times in one SELECT;
- SQLite: the table's AUTOINCREMENT counter (`sqlite_sequence`) moved up by `n` in one
  UPDATE, which makes the ids below it ours (SQLite never hands out an id at or below it).

Because a block comes from the very counter that numbers rows inserted without an id,
an id handed out here is never handed out again: not to another process or app (each
takes its own block, atomically, under the sequence's or the database's lock), not to a
plain `Model.create`. Ids stay integers, as the API's global ids expect.

Order: a process hands its ids out in increasing order, but its stock can be older than
another process's. So a stock older than `max_age` seconds is dropped (ids of rows made
in different processes follow time to within that), and `take(above=)` skips ids not
above a given one (a conversation's next messages must sort after the ones it has).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from tortoise import connections
from tortoise.models import Model
from tortoise.transactions import in_transaction

BLOCK = 128  # ids per block, at least (a block asked for by many waiters is larger)
MAX_BLOCK = 4096  # a stock used up fast doubles its blocks up to this
FAST = 1.0  # seconds: a stock used up sooner than this was too small
MAX_AGE = 10.0  # seconds a stock is used before it is dropped

_SQLITE_TAKE = "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = ? RETURNING seq"


async def reserve_ids(model: type[Model], count: int | Callable[[], int]) -> list[int]:
    """Fresh ids of `model`'s table from its own counter, increasing: `count` of them, or
    as many as `count()` says once the store is ready to hand them out (on SQLite, when
    the connection is ours: demand that arrived meanwhile is served by the same block)."""
    table = model._meta.db_table
    pk = model._meta.db_pk_column
    conn = connections.get(model._meta.default_connection or "default")
    if conn.capabilities.dialect == "postgres":
        count = count() if callable(count) else count
        rows = await conn.execute_query_dict(
            "SELECT nextval(pg_get_serial_sequence($1, $2)) AS id FROM generate_series(1, $3)",
            [table, pk, count],
        )
        return sorted(int(row["id"]) for row in rows)
    async with in_transaction() as tx:
        count = count() if callable(count) else count
        rows = await tx.execute_query_dict(_SQLITE_TAKE, [count, table])
        if not rows:
            # The table's counter starts with its first AUTOINCREMENT insert; start it at
            # the largest id present (one statement: two writers cannot both add it).
            start = (
                "INSERT INTO sqlite_sequence (name, seq) SELECT ?, "  # noqa: S608 - model names
                f'(SELECT COALESCE(MAX("{pk}"), 0) FROM "{table}") '
                "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)"
            )
            await tx.execute_query(start, [table, table])
            rows = await tx.execute_query_dict(_SQLITE_TAKE, [count, table])
    top = int(rows[0]["seq"])
    return list(range(top - count + 1, top + 1))


class IdBlock:
    """A process's stock of ids for one table (see the module's docstring).

    `take` answers at once from the stock; when the stock runs short, one refill at a
    time reserves a block big enough for everyone waiting, and a stock running low is
    refilled ahead of need (`prefetch`, or below a quarter of a block), so that a stream
    seldom waits for the store to name its rows. Blocks double while each is used up
    within FAST seconds (a burst takes a few refills, not one per BLOCK ids) and shrink
    back when a stock outlives MAX_AGE. A stock belongs to the event loop it was made
    on (`for_loop`)."""

    def __init__(
        self,
        model: type[Model],
        *,
        size: int = BLOCK,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.base = self.size = size
        self.max_age = max_age
        self.clock = clock
        self.ids: deque[int] = deque()
        self.fetched_at = 0.0
        self.waiting = 0  # ids that callers of `take` wait for
        self.promised = 0  # ids that `prefetch` said will be taken soon
        self.refill: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()

    def _fresh(self, above: int) -> None:
        if self.ids and self.clock() - self.fetched_at > self.max_age:
            self.ids.clear()
        while self.ids and self.ids[0] <= above:
            self.ids.popleft()

    def take_now(self, count: int, above: int = 0) -> list[int] | None:
        """`count` ids above `above` from the stock, or None when it has too few."""
        self._fresh(above)
        if len(self.ids) < count:
            return None
        taken = [self.ids.popleft() for _ in range(count)]
        self.promised = max(0, self.promised - count)
        if len(self.ids) < self.size // 4:
            self._refill(self.size)
        return taken

    async def take(self, count: int, above: int = 0) -> list[int]:
        """`count` ids above `above`, in increasing order."""
        while (taken := self.take_now(count, above)) is None:
            self.waiting += count
            try:
                await asyncio.shield(self._refill(self.size))
            finally:
                self.waiting -= count
        return taken

    def prefetch(self, count: int) -> None:
        """`count` ids will be taken soon: start a refill now if the stock (with what was
        promised before) cannot give them; a refill still waiting for the store takes
        them into account."""
        self._fresh(0)
        self.promised += count
        if len(self.ids) < self.promised:
            self._refill(self.size)

    def _refill(self, count: int) -> asyncio.Task[None]:
        if self.refill is None:
            age = self.clock() - self.fetched_at
            if age < FAST:
                self.size = min(self.size * 2, MAX_BLOCK)
            elif age > self.max_age:
                self.size = self.base
            self.refill = self.loop.create_task(self._fill(count))
            # A refill nobody waits for (ahead of need) must not log "never retrieved".
            self.refill.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self.refill

    async def _fill(self, count: int) -> None:
        def wanted() -> int:
            # Evaluated when the store is ready: everything promised or waited for by then.
            short = self.promised + self.waiting - len(self.ids)
            # Capped: plans refused after their prefetch (quota) never take their ids.
            return min(max(count, self.size, short + self.size // 2), 4 * MAX_BLOCK)

        try:
            fresh = await reserve_ids(self.model, wanted)
            self._fresh(0)
            self.ids.extend(fresh)  # above every id in stock: one counter, one refill at a time
            self.fetched_at = self.clock()
            self.promised = 0  # in stock now; a promise never kept is not carried on
        finally:
            self.refill = None


def for_loop(block: IdBlock | None, model: type[Model]) -> IdBlock:
    """`block` when it was made on the running loop, else a new one for `model`."""
    if block is not None and block.loop is asyncio.get_running_loop():
        return block
    return IdBlock(model)
