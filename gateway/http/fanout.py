"""Shared subscription executions: one execution per event for many sockets.

Subscribers whose operation text, operation name, variables, tenant AND role are equal
share one execution of a subscription declared `shared=True`
(`schema.permissions.subscription`; today `activity`): one source subscription on the
bus, one GraphQL execution per event, one encoded payload. Each socket's `next` frame is
that payload with its own operation id spliced in front (a string join), and the frames
of one event go out in one pass over the group, in the same loop tick.

Isolation. The group's key holds the tenant and the role, and its execution runs with
a context whose principal has exactly that tenant and role (and no user), so a field
that checks a permission or redacts by role answers for that role; the result goes
only to sockets of that key. What depends on the individual caller is not part of the
execution: the socket's own checks (`gateway/http/websocket.py`: per-subscribe recheck
and rate limit, 4401/4403 when the principal lapses) run per socket as before, and a
resolver's per-user check goes through `ctx.audience` (this group), which ends only the
subscribers that fail it (`resolvers.events.activity`). A promoted member keeps the
group of the role it subscribed with (it sees no less than that role may); a demoted
one is closed with 4403 by its socket and subscribes again.

Anything else over the socket (queries, mutations, unshared subscriptions, a caller
without a principal, a document whose root is not one plain shared field) takes
strawberry's own path, one task per operation.

Lifetimes. A subscriber that leaves (`complete`, its socket closing or lapsing, its
backlog overflowing) leaves only the group; the last one leaving cancels the shared
execution and its bus subscription. When the execution ends (an error, or the stream
completing) every subscriber gets the same `error`/`next` and `complete`.

Slow sockets. A frame is written at once when the socket takes it without waiting (the
send coroutine is stepped by hand: no task per socket per event); a socket whose send
has to wait gets a writer task and a backlog of at most SOCKET_BACKLOG frames, and when
that overflows its subscription ends with RATE_LIMITED (as an unshared one falling
behind the bus does) while the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Collection, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from graphql import FieldNode, OperationDefinitionNode, OperationType, parse
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from gateway.http.responses import encode_json
from kit.errors import GatewayError, RateLimited
from kit.logging import request_id_var
from kit.metrics import ws_shared_executions, ws_shared_subscribers
from kit.roles import Role
from kit.security import Principal
from resolvers.context import Context, Services
from schema.memo import Memo
from schema.permissions import shared_subscriptions

if TYPE_CHECKING:
    from gateway.http.websocket import GuardedTransportWS

log = logging.getLogger("switchboard.ws")

# Frames a slow socket may have waiting before its shared subscription is ended.
SOCKET_BACKLOG = 256
_SHAPES = 512

GroupKey = tuple[str, str | None, str, int, Role]


class Fanout:
    """The shared executions of one app (one per GraphQL view)."""

    def __init__(self, schema: Any, services: Services) -> None:
        self.schema = schema
        self.services = services
        self.groups: dict[GroupKey, Group] = {}
        self._fields: frozenset[str] | None = None
        self._shapes: Memo[str | None] = Memo(_SHAPES)

    def shared_field(self, query: object, operation_name: object) -> str | None:
        """The response key of the one shared root field `query` subscribes to (its
        operation `operation_name`), or None when it cannot be shared."""
        if not isinstance(query, str) or not (
            operation_name is None or isinstance(operation_name, str)
        ):
            return None
        return self._shapes.compute(
            (query, operation_name), lambda: self._shape(query, operation_name)
        )

    def _shape(self, query: str, operation_name: str | None) -> str | None:
        if self._fields is None:
            self._fields = shared_subscriptions(self.schema._schema)
        if not self._fields:
            return None
        try:
            document = parse(query, max_tokens=self.services.settings.max_query_tokens)
        except Exception:
            return None  # strawberry's path answers the syntax error as it always has
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is None:
            chosen = operations if len(operations) == 1 else []
        else:
            chosen = [
                o for o in operations if o.name is not None and o.name.value == operation_name
            ]
        if len(chosen) != 1 or chosen[0].operation is not OperationType.SUBSCRIPTION:
            return None
        selections = chosen[0].selection_set.selections
        # One plain field, no directive on it: fragments or @skip/@include at the root
        # are rare enough to leave to the unshared path.
        if len(selections) != 1 or not isinstance(selections[0], FieldNode):
            return None
        root = selections[0]
        if root.directives or root.name.value not in self._fields:
            return None
        return root.alias.value if root.alias else root.name.value

    def join(
        self,
        handler: GuardedTransportWS,
        operation_id: str,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        field: str,
        principal: Principal,
    ) -> Subscriber:
        """Add `handler`'s operation to the group of its key (made and started if none)."""
        key: GroupKey = (
            query,
            operation_name,
            _encode_variables(variables),
            principal.tenant_id,
            principal.role,
        )
        group = self.groups.get(key)
        if group is None:
            group = Group(self, key, query, variables, operation_name, field)
            self.groups[key] = group
            group.start()
        subscriber = Subscriber(group, handler, operation_id)
        group.add(subscriber)
        return subscriber


def _encode_variables(variables: dict[str, Any] | None) -> str:
    return json.dumps(variables or {}, sort_keys=True, separators=(",", ":"), default=str)


class Group:
    """One shared execution and its subscribers (an Audience: resolvers/context.py)."""

    __slots__ = (
        "fanout",
        "field",
        "key",
        "members",
        "operation_name",
        "query",
        "task",
        "variables",
    )

    def __init__(
        self,
        fanout: Fanout,
        key: GroupKey,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        field: str,
    ) -> None:
        self.fanout = fanout
        self.key = key
        self.query = query
        self.variables = variables
        self.operation_name = operation_name
        self.field = field
        # Insertion-ordered set: frames go out in subscription order.
        self.members: dict[Subscriber, None] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        ws_shared_executions.inc()
        self.task = asyncio.create_task(self._run(), name="shared-subscription")
        self.task.add_done_callback(_retrieve)

    def add(self, member: Subscriber) -> None:
        self.members[member] = None
        ws_shared_subscribers.inc()

    def remove(self, member: Subscriber) -> None:
        if self.members.pop(member, 0) is None:
            ws_shared_subscribers.dec()
        if not self.members:
            self._forget()
            # From inside the execution too (its last subscribers refused or too slow):
            # it then stops at its next await.
            if self.task is not None:
                self.task.cancel()

    def _forget(self) -> None:
        """No new subscriber joins this group from now on."""
        if self.fanout.groups.get(self.key) is self:
            del self.fanout.groups[self.key]

    # The Audience protocol ---------------------------------------------------------------

    def principals(self) -> Iterator[Principal]:
        for member in list(self.members):
            principal = member.handler.context.principal
            if principal is not None:
                yield principal

    def refuse(self, principals: Collection[Principal], error: GatewayError) -> None:
        refused = {id(p) for p in principals}
        for member in list(self.members):
            if id(member.handler.context.principal) in refused:
                member.end_with(error)

    # The execution ---------------------------------------------------------------------------

    async def _run(self) -> None:
        _query, _name, _variables, tenant_id, role = self.key
        request_id = f"shared-{uuid.uuid4().hex}"
        request_id_var.set(request_id)
        context = Context(
            services=self.fanout.services,
            request_id=request_id,
            principal=Principal(user_id=None, tenant_id=tenant_id, role=role),
            client_ip="shared",
            audience=self,
        )
        try:
            source = await self.fanout.schema.stream(
                self.query,
                variable_values=self.variables,
                context_value=context,
                operation_name=self.operation_name,
            )
            async with aclosing(source):
                first = True
                async for result in source:
                    if first and isinstance(result, PreExecutionError):
                        assert result.errors
                        self._finish(
                            {"type": "error", "payload": [e.formatted for e in result.errors]}
                        )
                        return
                    first = False
                    if not isinstance(result, ExecutionResult):
                        self._finish(
                            {
                                "type": "error",
                                "payload": [
                                    {
                                        "message": "Incremental delivery is not supported over "
                                        "graphql-transport-ws"
                                    }
                                ],
                            }
                        )
                        return
                    self._broadcast(result)
            self._finish({"type": "complete"})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a shared subscription failed")
            self._finish({"type": "complete"})
        finally:
            self._forget()
            self.task = None
            for member in list(self.members):
                member.detach()
            self.members.clear()
            ws_shared_executions.dec()

    def _broadcast(self, result: ExecutionResult) -> None:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        if result.extensions:
            payload["extensions"] = result.extensions
        body = encode_json(payload) + "}"
        for member in list(self.members):
            member.push(member.prefix + body)

    def _finish(self, message: dict[str, Any]) -> None:
        """The last message of every subscriber (`error` or `complete`)."""
        self._forget()
        self.task = None  # ending on its own: nothing to cancel when the last one leaves
        rest = encode_json(message)[1:]  # `"type":…}` after the spliced id
        for member in list(self.members):
            member.push(f'{{"id":{encode_json(member.id)},{rest}', last=True)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class Subscriber:
    """One socket's operation in a group: its frames' prefix, and a backlog while its
    socket is slow."""

    __slots__ = ("backlog", "group", "handler", "id", "prefix", "writer")

    def __init__(self, group: Group, handler: GuardedTransportWS, operation_id: str) -> None:
        self.group: Group | None = group
        self.handler = handler
        self.id = operation_id
        self.prefix = f'{{"id":{encode_json(operation_id)},"type":"next","payload":'
        self.backlog: deque[str] | None = None
        self.writer: asyncio.Task[None] | None = None

    def push(self, frame: str, *, last: bool = False, force: bool = False) -> None:
        """Send `frame` now if the socket takes it, else queue it behind the one waiting
        (beyond the bound only when `force`d: the closing messages)."""
        if last:
            self.detach()
        if self.backlog is not None:
            if last or force or len(self.backlog) < SOCKET_BACKLOG:
                self.backlog.append(frame)
            else:
                self.end_with(
                    RateLimited(
                        1,
                        "This subscription fell too far behind the event stream; subscribe again.",
                    )
                )
            return
        try:
            waiting = _step(self.handler.send_frame(frame))
        except Exception:
            self._gone()
            return
        if waiting is not None:
            self.backlog = deque()
            self.writer = asyncio.ensure_future(self._drain(waiting))

    async def _drain(self, waiting: Coroutine[Any, Any, None]) -> None:
        try:
            await waiting
            while self.backlog:
                await self.handler.send_frame(self.backlog.popleft())
        except Exception:
            self._gone()
        finally:
            self.backlog = None
            self.writer = None

    def end_with(self, error: GatewayError) -> None:
        """End this subscription alone with `error` (as the unshared path would: a `next`
        without data, then `complete`)."""
        if self.group is None:
            return
        formatted = {
            "message": error.message,
            "path": [self.group.field],
            "extensions": {**error.as_extensions(), "requestId": self.handler.context.request_id},
        }
        self.push(
            self.prefix + encode_json({"data": None, "errors": [formatted]}) + "}", force=True
        )
        self.push(f'{{"id":{encode_json(self.id)},"type":"complete"}}', last=True)

    def detach(self) -> None:
        """Out of the group and the socket's operations (its id may be used again)."""
        group, self.group = self.group, None
        if group is not None:
            self.handler.forget_shared(self.id, self)
            group.remove(self)

    def leave(self) -> None:
        """The client completed, or its socket is ending: nothing more is sent."""
        self.detach()
        if self.writer is not None:
            self.writer.cancel()
        self.backlog = None

    def _gone(self) -> None:
        """The socket refused a frame (closed): stop sending to it."""
        self.detach()
        if self.writer is not None and self.writer is not asyncio.current_task():
            self.writer.cancel()
        self.backlog = None


def _step(coro: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None] | None:
    """Run `coro` until it finishes or has to wait: None when it finished (the common
    case: the socket's transport took the frame), else a coroutine finishing it.

    A task per socket per event would cost an object and a loop hop each; this costs
    neither when nothing waits. Raises what `coro` raises before its first wait."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return _resume(coro, waiting)


async def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive `coro` on from the future it yielded, as asyncio's Task would."""
    try:
        while True:
            if waiting is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))
            try:
                waiting = coro.send(None)
            except StopIteration:
                return
    except BaseException:
        with contextlib.suppress(Exception):
            coro.close()
        raise
