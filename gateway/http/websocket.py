"""graphql-transport-ws with the caller kept honest for the socket's whole life.

HTTP checks the principal on every request; a socket is authenticated once, at
`connection_init`, and may stay open for hours. So, per socket:

- every `subscribe` (queries and mutations sent over the socket included) re-checks the
  principal first (`resolvers.authority.recheck`: token expiry, API key revoked or
  capped, membership removed or changed, account deactivated) and draws from the same
  per-principal (or, anonymous, per-address) rate-limit budget as an HTTP request; over
  budget, that operation gets an `error` message with `extensions.code` RATE_LIMITED and
  `retryAfter`, and the socket stays open;
- when the principal lapses the socket is closed, ending every running operation:
  **4401** when the caller is no longer authenticated (access token expired, API key
  revoked, member removed, account deactivated) and **4403** when its role changed to
  one lacking a permission it had (demotion, or a key capped): the client reconnects
  with a fresh token and subscribes again at its current role. A promotion just applies.
- lapses are noticed without polling: the socket watches its member's standing and its
  key (`resolvers.authority.watch`), which every change wakes in this process at once and
  in other processes through the event bus; a timer fires at the token's expiry.

Subscriptions declared shared (`activity`) join a shared execution
(`gateway/http/fanout.py`) after those same checks instead of running one of their own;
closing the socket leaves it, and the others sharing it go on.

A socket is held for hours and there may be thousands: what it keeps is made on first
use (the task set of its watchers' work, its shared operations) and nothing runs per
socket while it is idle beyond uvicorn's reader and strawberry's message loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)

from kit.errors import Unauthenticated
from kit.roles import permissions_of
from kit.security import Principal
from resolvers import authority
from resolvers.context import Context

if TYPE_CHECKING:
    from gateway.http.fanout import Fanout, Subscriber

log = logging.getLogger("switchboard.ws")

UNAUTHORIZED = 4401
FORBIDDEN = 4403


class GuardedTransportWS(BaseGraphQLTransportWSHandler[Context, Any]):
    """Strawberry's handler, plus the per-operation checks and lapse handling above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unwatch: Any = None
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] | None = None
        self._shared: dict[str, Subscriber] | None = None
        self._ended = False

    @property
    def services(self) -> Any:
        return self.context.services

    @property
    def _fanout(self) -> Fanout:
        return self.view.fanout  # type: ignore[attr-defined,no-any-return]  # GatewayGraphQL's

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        principal = self.context.principal
        if self.connection_acknowledged and principal is not None and not self._ended:
            self._unwatch = authority.watch(
                self.services, authority.watch_keys(principal), self._changed
            )
            if principal.expires_at is not None:
                delay = max(0.0, principal.expires_at - time.time())
                self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged or self._ended:
            await super().handle_subscribe(message)
            return
        if self.context.principal is not None:
            try:
                self.context.principal = await authority.recheck(
                    self.services, self.context.principal
                )
            except Unauthenticated as exc:
                await self._end(UNAUTHORIZED, exc.message)
                return
        retry_after = await self._over_budget()
        if retry_after is not None:
            await self.send_message(
                {
                    "id": message["id"],
                    "type": "error",
                    "payload": [
                        {
                            "message": "Rate limit exceeded.",
                            "extensions": {
                                "code": "RATE_LIMITED",
                                "retryAfter": retry_after,
                                "requestId": self.context.request_id,
                            },
                        }
                    ],
                }
            )
            return
        payload = message["payload"]
        query, name = payload["query"], payload.get("operationName")
        principal = self.context.principal
        field = None if principal is None else self._fanout.shared_field(query, name)
        if field is None:
            if self._shared and message["id"] in self._shared:
                await self.websocket.close(
                    code=4409, reason=f"Subscriber for {message['id']} already exists"
                )
                return
            await super().handle_subscribe(message)
            return
        assert principal is not None
        if message["id"] in self.operations or (self._shared and message["id"] in self._shared):
            await self.websocket.close(
                code=4409, reason=f"Subscriber for {message['id']} already exists"
            )
            return
        variables = payload.get("variables")
        if self._shared is None:
            self._shared = {}
        self._shared[message["id"]] = self._fanout.join(
            self, message["id"], query, variables, name, field, principal
        )

    async def send_frame(self, frame: str) -> None:
        """One encoded message (a shared execution's frame)."""
        await self.websocket.ws.send({"type": "websocket.send", "text": frame})  # type: ignore[attr-defined]

    def forget_shared(self, operation_id: str, subscriber: Subscriber) -> None:
        if self._shared is not None and self._shared.get(operation_id) is subscriber:
            del self._shared[operation_id]

    async def cleanup_operation(self, operation_id: str) -> None:
        subscriber = self._shared.get(operation_id) if self._shared else None
        if subscriber is not None:
            subscriber.leave()
            return
        await super().cleanup_operation(operation_id)

    async def _over_budget(self) -> int | None:
        """Seconds to wait when this operation is over the caller's HTTP budget."""
        settings = self.services.settings
        if not settings.rate_limit_enabled:
            return None
        principal = self.context.principal
        if principal is not None:
            spec = await authority.rate_limit_of(self.services, principal.tenant_id)
            identity = ("principal", principal.key)
        else:
            spec, identity = settings.rate_limit_anonymous, ("address", self.context.client_ip)
        try:
            decision = await self.services.limiter.hit(spec, *identity)
        except Exception:
            log.error("rate limiter unavailable; socket operation let through", exc_info=True)
            return None
        return None if decision.allowed else decision.retry_after

    def _expired(self) -> None:
        self._spawn(self._end(UNAUTHORIZED, "Access token expired."))

    def _changed(self) -> None:
        """A watcher: the member's standing or the key changed somewhere."""
        self._spawn(self._reassess())

    async def _reassess(self) -> None:
        before: Principal | None = self.context.principal
        if before is None or self._ended:
            return
        try:
            after = await authority.recheck(self.services, before)
        except Unauthenticated as exc:
            await self._end(UNAUTHORIZED, exc.message)
            return
        if not permissions_of(after.role) >= permissions_of(before.role):
            await self._end(FORBIDDEN, f"Your role changed to {after.role.value}; reconnect.")
            return
        self.context.principal = after

    async def _end(self, code: int, reason: str) -> None:
        """Cancel every running operation, then close the socket with `code`."""
        if self._ended:
            return
        self._ended = True
        for operation_id in [*self.operations, *(self._shared or ())]:
            await self.cleanup_operation(operation_id)
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.websocket.close(code=code, reason=reason[:120])

    async def handle_task_exception(self, error: Exception) -> None:
        # A client that left while an event was on its way is not an incident: strawberry
        # would log it with a traceback.
        if isinstance(error, WebSocketDisconnected):
            log.debug("a subscriber left while an event was being sent")
            return
        await super().handle_task_exception(error)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._expiry is not None:
            self._expiry.cancel()
        for subscriber in list((self._shared or {}).values()):
            subscriber.leave()
        for task in list(self._tasks or ()):
            if task is not asyncio.current_task():
                task.cancel()
        await super().shutdown()
