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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

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

log = logging.getLogger("switchboard.ws")

UNAUTHORIZED = 4401
FORBIDDEN = 4403


class GuardedTransportWS(BaseGraphQLTransportWSHandler[Context, Any]):
    """Strawberry's handler, plus the per-operation checks and lapse handling above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unwatch: Any = None
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended = False

    @property
    def services(self) -> Any:
        return self.context.services

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
        await super().handle_subscribe(message)

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
        for operation_id in list(self.operations):
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
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._expiry is not None:
            self._expiry.cancel()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await super().shutdown()
