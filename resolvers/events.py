"""Domain events: a transactional outbox, a relay to the bus, subscribers and listeners.

- `await emit(tenant_id, "contact.created", {...}, connection=conn)` writes an
  `OutboxEvent` in the caller's transaction. Nothing is emitted for a change that
  rolls back. After commit the relay is nudged (fast path); it also polls for
  unpublished rows (safety net), so an event survives a crash between commit and
  publish.
- The relay (`relay_once`, run by `gateway/worker.py` in every process) claims
  unpublished rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL), runs the in-process
  listeners registered with `@listener("pattern")` in the same transaction as marking
  the row published (so a listener that enqueues jobs does so exactly once), publishes
  the event on the bus, and commits.
- `subscribe(tenant_id, types)` is an async iterator over one tenant's live events
  (the `activity` subscription), fed by the bus (Redis across processes).

Event names are `area.verb_past`: `contact.created`, `lead.status_changed`,
`member.joined`. `data` must be JSON-able.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import fnmatch
import json
import logging
import re
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.transactions import in_transaction

from kit.bus import EventBus, InProcessBus, SubscriberTooSlow
from kit.errors import BadUserInput, RateLimited, Unauthenticated
from kit.roles import allowed
from kit.security import Principal
from models.apikeys import ApiKey
from models.events import OutboxEvent
from models.members import Membership
from resolvers.context import Audience, Context
from resolvers.operations import operation

log = logging.getLogger("switchboard.events")

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_LISTENER_ATTEMPTS = 5


@dataclass(frozen=True)
class Event:
    """A published domain event, as listeners and subscribers see it."""

    id: int
    tenant_id: int
    type: str
    data: dict[str, Any]
    occurred_at: dt.datetime

    def to_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "type": self.type,
            "data": self.data,
            "occurred_at": self.occurred_at.isoformat(),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Event:
        return cls(
            id=int(message["id"]),
            tenant_id=int(message["tenant_id"]),
            type=str(message["type"]),
            data=dict(message.get("data") or {}),
            occurred_at=dt.datetime.fromisoformat(str(message["occurred_at"])),
        )

    @classmethod
    def from_row(cls, row: OutboxEvent) -> Event:
        return cls(row.id, row.tenant_id, row.type, dict(row.data or {}), row.created_at)


def global_id(type_name: str, row_id: int) -> str:
    """A node's global id exactly as the API shows it (base64 of `Type:id`), for event data:
    events reach webhooks and the activity stream, which speak the API's ids."""
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def row_id(gid: object, type_name: str) -> int | None:
    """The row id inside a `global_id` of `type_name`; None for anything else."""
    try:
        kind, _, raw = base64.b64decode(str(gid), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return int(raw) if kind == type_name and raw.isdigit() and len(raw) < 19 else None


def channel_for(tenant_id: int) -> str:
    return f"events:{tenant_id}"


# Process state: the bus and the relay's wake-up, installed by gateway/worker.py ----------

_bus: EventBus | None = None
_nudges: list[Callable[[], None]] = []


def install_bus(bus: EventBus | None) -> None:
    global _bus
    _bus = bus


def get_bus() -> EventBus:
    """The process's bus; an in-process one until the runtime installs the configured one."""
    global _bus
    if _bus is None:
        _bus = InProcessBus()
    return _bus


def add_nudge(callback: Callable[[], None]) -> None:
    _nudges.append(callback)


def remove_nudge(callback: Callable[[], None]) -> None:
    if callback in _nudges:
        _nudges.remove(callback)


def _nudge_relay() -> None:
    for cb in list(_nudges):
        cb()


# After-commit hooks ---------------------------------------------------------------------


def _outermost(conn: BaseDBAsyncClient) -> TransactionalDBClient | None:
    """The transaction that really commits (a savepoint's parent chain ends at it)."""
    found: TransactionalDBClient | None = None
    current: Any = conn
    while isinstance(current, TransactionalDBClient):
        found = current
        current = getattr(current, "_parent", None)
    return found


def after_commit(connection: BaseDBAsyncClient | None, callback: Callable[[], None]) -> None:
    """Call `callback` once `connection`'s transaction commits; at once outside a transaction.

    Never called for a rollback. Tortoise has no commit hooks, so the outermost
    transaction client's `commit` is wrapped for this one transaction (clients are
    created per transaction).
    """
    conn = connection if connection is not None else connections.get("default")
    tx = _outermost(conn)
    if tx is None or tx._finalized:
        callback()
        return
    hooks: list[Callable[[], None]] | None = tx.__dict__.get("_switchboard_after_commit")
    if hooks is None:
        hooks = []
        tx.__dict__["_switchboard_after_commit"] = hooks
        original = tx.commit

        async def commit() -> None:
            await original()
            for hook in hooks:
                try:
                    hook()
                except Exception:
                    log.exception("after-commit hook failed")

        tx.commit = commit  # type: ignore[method-assign]
    hooks.append(callback)


# Emit -------------------------------------------------------------------------------------


async def emit(
    tenant_id: int,
    type: str,
    data: dict[str, Any] | None = None,
    *,
    connection: BaseDBAsyncClient | None = None,
) -> OutboxEvent:
    """Record a domain event of `tenant_id` in the caller's transaction (or on its own)."""
    if not EVENT_TYPE.match(type):
        raise ValueError(f"event type {type!r} must look like 'area.verb_past'")
    # Stored and sent as JSON: decimals, dates and enums become their string form here,
    # not a failure at publish time.
    plain = json.loads(json.dumps(data or {}, default=str))
    conn = connection if connection is not None else connections.get("default")
    row = await OutboxEvent.create(using_db=conn, tenant_id=tenant_id, type=type, data=plain)
    after_commit(conn, _nudge_relay)
    return row


async def move_forward(
    row: Any,
    status: str,
    rank: dict[str, int],
    values: dict[str, Any],
    *,
    event_type: str,
    event_data: Callable[[Any], dict[str, Any]],
    connection: BaseDBAsyncClient,
) -> bool:
    """A forward-only state move: set `row`'s status (and `values`) only while it stands
    lower in `rank` — one conditional UPDATE, so a late or racing update never moves it
    back — and, when it moved, emit `event_type` in the same transaction. True if moved."""
    lower = [s for s, r in rank.items() if r < rank[status]]
    moved = (
        await type(row)
        .filter(id=row.id, status__in=lower)
        .using_db(connection)
        .update(status=status, **values)
    )
    if not moved:
        return False
    row.status = status
    for name, value in values.items():
        setattr(row, name, value)
    await emit(row.tenant_id, event_type, event_data(row), connection=connection)
    return True


async def emit_many(
    tenant_id: int,
    items: list[tuple[str, dict[str, Any]]],
    *,
    connection: BaseDBAsyncClient | None = None,
) -> None:
    """Record several events of `tenant_id` in one insert (a bulk send's messages)."""
    if not items:
        return
    for type, _ in items:
        if not EVENT_TYPE.match(type):
            raise ValueError(f"event type {type!r} must look like 'area.verb_past'")
    conn = connection if connection is not None else connections.get("default")
    rows = [
        OutboxEvent(tenant_id=tenant_id, type=type, data=json.loads(json.dumps(data, default=str)))
        for type, data in items
    ]
    await OutboxEvent.bulk_create(rows, using_db=conn)
    after_commit(conn, _nudge_relay)


# Listeners (in-process, run once per event by whichever relay publishes it) --------------

Listener = Callable[[Event, BaseDBAsyncClient], Awaitable[None]]


@dataclass(frozen=True)
class _Registration:
    pattern: str
    fn: Listener


_listeners: list[_Registration] = []


def listener(pattern: str) -> Callable[[Listener], Listener]:
    """Register `async def fn(event: Event, connection) -> None` for types matching `pattern`.

    Patterns are glob-style (`contact.*`, `*`). The listener runs once per event, in the
    relay's transaction: write rows or `enqueue(..., connection=connection)` there and
    they commit together with the event being marked published. A listener that raises
    rolls that event back; it is retried on the next relay pass, a few times at most.
    """

    def register(fn: Listener) -> Listener:
        key = (pattern, getattr(fn, "__module__", ""), getattr(fn, "__qualname__", ""))
        _listeners[:] = [
            r
            for r in _listeners
            if (r.pattern, getattr(r.fn, "__module__", ""), getattr(r.fn, "__qualname__", ""))
            != key
        ]
        _listeners.append(_Registration(pattern, fn))
        return fn

    return register


def registered_listeners() -> list[str]:
    """`pattern module.function` of every registered listener (operators, tests)."""
    return [f"{r.pattern} {r.fn.__module__}.{r.fn.__qualname__}" for r in _listeners]


def matches(pattern: str, type: str) -> bool:
    return fnmatch.fnmatchcase(type, pattern)


# Relay ------------------------------------------------------------------------------------


async def relay_once(*, batch: int = 100) -> int:
    """Publish up to `batch` unpublished events; returns how many were published."""
    bus = get_bus()
    published = 0
    if not await OutboxEvent.filter(published_at__isnull=True).exists():
        return 0
    async with in_transaction() as conn:
        if conn.capabilities.dialect == "postgres":
            rows = await conn.execute_query_dict(
                "SELECT id FROM outbox_events WHERE published_at IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                [batch],
            )
            ids = [r["id"] for r in rows]
            events = (
                list(await OutboxEvent.filter(id__in=ids).using_db(conn).order_by("id"))
                if ids
                else []
            )
        else:
            # SQLite has no SKIP LOCKED: claim each row with a conditional UPDATE (the
            # first write takes the database's write lock), so a second process sharing
            # the file never publishes an event or runs its listeners twice.
            candidates = (
                await OutboxEvent.filter(published_at__isnull=True)
                .using_db(conn)
                .order_by("id")
                .limit(batch)
            )
            moment = dt.datetime.now(dt.UTC)
            events = []
            for row in candidates:
                claimed = (
                    await OutboxEvent.filter(id=row.id, published_at__isnull=True)
                    .using_db(conn)
                    .update(published_at=moment)
                )
                if claimed:
                    events.append(row)
        outgoing: list[Event] = []
        for row in events:
            event = Event.from_row(row)
            error = await _run_listeners(event, conn)
            if error is not None:
                row.relay_attempts += 1
                row.last_error = error
                if row.relay_attempts < MAX_LISTENER_ATTEMPTS:
                    row.published_at = None  # the next relay pass tries again
                    await row.save(
                        using_db=conn,
                        update_fields=["published_at", "relay_attempts", "last_error"],
                    )
                    continue
                log.error(
                    "event %s (%s): listeners kept failing; published anyway", row.id, row.type
                )
            row.published_at = dt.datetime.now(dt.UTC)
            await row.save(
                using_db=conn, update_fields=["published_at", "relay_attempts", "last_error"]
            )
            outgoing.append(event)
        # Published before commit: a crash after publishing and before commit publishes
        # the event again (same id), never loses it. Subscribers may dedupe by id.
        # The bus is the live, best-effort part: when it is down, the listeners' durable
        # work (webhook deliveries…) still commits; only live subscribers miss the event.
        for event in outgoing:
            try:
                await bus.publish(channel_for(event.tenant_id), event.to_message())
            except Exception:
                log.warning("event %s not sent to live subscribers", event.id, exc_info=True)
            published += 1
    return published


async def _run_listeners(event: Event, conn: BaseDBAsyncClient) -> str | None:
    chosen = [r for r in _listeners if matches(r.pattern, event.type)]
    if not chosen:
        return None
    try:
        # A savepoint: a failing listener undoes only its own event's writes.
        async with conn._in_transaction() as inner:
            for reg in chosen:
                await reg.fn(event, inner)
    except Exception as exc:
        log.exception("listener failed for event %s (%s)", event.id, event.type)
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]
    return None


# Subscribe --------------------------------------------------------------------------------


async def subscribe(
    tenant_id: int, types: Iterable[str] | None = None
) -> AsyncGenerator[Event, None]:
    """Live events of one tenant, optionally only types matching `types` (globs allowed)."""
    wanted = [t for t in (types or []) if t]
    stream = get_bus().subscribe([channel_for(tenant_id)])
    try:
        async for message in stream:
            try:
                event = Event.from_message(message)
            except (KeyError, TypeError, ValueError):
                log.warning("ignored a malformed event message")
                continue
            if event.tenant_id != tenant_id:
                continue
            if wanted and not any(matches(p, event.type) for p in wanted):
                continue
            yield event
    finally:
        await stream.aclose()


# A followed row is read again at least this often: the bus delivers at most once, so a
# change whose event was missed (or fell between the first read and the subscription)
# still shows.
FOLLOW_POLL_SECONDS = 5.0

R = TypeVar("R")


async def follow(
    tenant_id: int,
    types: list[str],
    about: Callable[[Event], bool],
    load: Callable[[], Awaitable[R | None]],
    state: Callable[[R], object],
    final: Callable[[R], bool],
    *,
    poll_seconds: float = FOLLOW_POLL_SECONDS,
) -> AsyncGenerator[R, None]:
    """One row of a tenant, now and at each change, until `final` (a status subscription:
    `emailStatus`, `invoiceStatus`, …). Wakes on the tenant's events of `types` that are
    `about` the row, and reads it again at least every `poll_seconds`; yields only when
    `state(row)` changed. `load()` answering None (the row is gone) ends the stream."""
    changed: asyncio.Queue[None] = asyncio.Queue()

    async def listen() -> None:
        async for event in subscribe(tenant_id, types):
            if about(event):
                changed.put_nowait(None)

    listener = asyncio.create_task(listen())
    try:
        await asyncio.sleep(0)  # the subscription starts before the first read
        row = await load()
        if row is None:
            return
        yield row
        while not final(row):
            try:
                await asyncio.wait_for(changed.get(), poll_seconds)
            except TimeoutError:
                pass
            if listener.done():
                listener.result()  # the stream failed (too slow, bus gone): say so
            fresh = await load()
            if fresh is None:
                return
            if state(fresh) != state(row):
                row = fresh
                yield row
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener


MAX_TYPE_FILTERS = 50
TYPE_FILTER = re.compile(r"^[a-z0-9_*]+(\.[a-z0-9_*]+)*$")


async def _too_slow_is_rate_limited(
    stream: AsyncGenerator[Event, None],
) -> AsyncGenerator[Event, None]:
    try:
        async for event in stream:
            yield event
    except SubscriberTooSlow:
        raise RateLimited(
            1, "This subscription fell too far behind the event stream; subscribe again."
        ) from None


# A long-lived stream re-checks that its caller still belongs to the tenant: at most this
# often, and at once on a membership event about the caller. Only events carry data, so
# checking before each one closes the stream before anything leaks.
ACCESS_RECHECK_SECONDS = 10.0


async def _still_allowed(principal: Principal) -> bool:
    return not await _lapsed([principal])


# Rows read per statement when an audience is checked at once (SQLite's variable limit).
_CHECK_CHUNK = 500


async def _lapsed(principals: Collection[Principal]) -> list[Principal]:
    """Those of `principals` (one tenant's) that may no longer read the activity stream:
    their key revoked or capped, their membership gone or without the permission. One
    statement per kind and chunk, so a shared stream's thousands of subscribers cost a
    few reads, not one each."""
    if not principals:
        return []
    tenant_id = next(iter(principals)).tenant_id
    key_ids = sorted({p.api_key_id for p in principals if p.api_key_id is not None})
    user_ids = sorted(
        {p.user_id for p in principals if p.api_key_id is None and p.user_id is not None}
    )
    keys_ok: set[int] = set()
    for i in range(0, len(key_ids), _CHECK_CHUNK):
        rows = await ApiKey.filter(
            id__in=key_ids[i : i + _CHECK_CHUNK], tenant_id=tenant_id, revoked_at=None
        ).values_list("id", "role")
        keys_ok.update(k for k, role in rows if allowed(role, "activity:read"))
    users_ok: set[int] = set()
    for i in range(0, len(user_ids), _CHECK_CHUNK):
        rows = await Membership.filter(
            user_id__in=user_ids[i : i + _CHECK_CHUNK], tenant_id=tenant_id
        ).values_list("user_id", "role")
        users_ok.update(u for u, role in rows if allowed(role, "activity:read"))
    return [
        p
        for p in principals
        if p.tenant_id != tenant_id
        or (p.api_key_id not in keys_ok if p.api_key_id is not None else p.user_id not in users_ok)
    ]


def _about(principal: Principal, event: Event) -> bool:
    if not event.type.startswith("member."):
        return False
    if event.type == "member.role_changed":  # names the member, not the user: re-check
        return True
    return principal.user_id is not None and event.data.get("userId") == global_id(
        "User", principal.user_id
    )


@operation("activity:read")
async def activity(ctx: Context, types: list[str] | None) -> AsyncGenerator[Event, None]:
    """The caller's tenant's live events (the `activity` subscription).

    Ends with UNAUTHENTICATED once the caller no longer belongs to the tenant (removed,
    key revoked): nothing is sent after that. Nothing here depends on the caller beyond
    its tenant and role except that check, so the stream may be shared by the tenant's
    subscribers of one role (`ctx.audience`, gateway/http/fanout.py): the check is then
    made on each of them (batched), and only those who fail it are ended.
    """
    principal = ctx.require_principal()
    wanted = list(types or [])
    if len(wanted) > MAX_TYPE_FILTERS:
        raise BadUserInput(
            "Too many event types.", details={"types": f"at most {MAX_TYPE_FILTERS}"}
        )
    bad = [t for t in wanted if len(t) > 100 or not TYPE_FILTER.match(t)]
    if bad:
        raise BadUserInput(
            "Invalid event type.",
            details={"types": "each is like `contact.created` or `contact.*`"},
        )
    audience = ctx.audience
    loop = asyncio.get_running_loop()
    checked_at = loop.time()
    # Unfiltered underneath, so membership events reach the access check; filtered below.
    stream = subscribe(principal.tenant_id)
    checked = _too_slow_is_rate_limited(stream)
    try:
        async for event in checked:
            due = loop.time() - checked_at > ACCESS_RECHECK_SECONDS
            if audience is not None:
                if due or event.type.startswith("member."):
                    await _check_audience(audience, event, everyone=due)
                    if due:
                        checked_at = loop.time()
            elif _about(principal, event) or due:
                if not await _still_allowed(principal):
                    raise Unauthenticated("You no longer have access to this organization.")
                checked_at = loop.time()
            if wanted and not any(matches(p, event.type) for p in wanted):
                continue
            yield event
    finally:
        await checked.aclose()
        await stream.aclose()


async def _check_audience(audience: Audience, event: Event, *, everyone: bool) -> None:
    """A shared stream's access check, before `event` goes out: every subscriber when
    the periodic check is due, else those the (membership) event is about."""
    concerned = [p for p in audience.principals() if everyone or _about(p, event)]
    lapsed = await _lapsed(concerned)
    if lapsed:
        audience.refuse(lapsed, Unauthenticated("You no longer have access to this organization."))
