"""Each operation's permission, declared once, on the function that does the work.

    @operation("apikeys:manage")
    async def create_api_key(ctx: Context, *, name: str, role: str) -> CreatedKey: ...

The decorated function checks the permission on every call, whoever calls it (a GraphQL
field, an HTTP route, a job), and returns the caller's Principal through `ctx.principal`
as usual. Its `permission` attribute is what the schema's field decorators read
(`schema/permissions.py`: `@mutation(operation=apikeys.create_api_key, ...)`) to print the
roles into the field's description and to refuse a caller before its arguments are even
converted; so a field and a route that reach the same function cannot disagree.

`PUBLIC` needs nothing, `SIGNED_IN` any principal; other names come from
`kit.roles.MATRIX`. Functions that must read the caller's standing from the store (those
that grant authority) still call `resolvers.authority.confirm` inside, under their lock.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from kit.roles import describe
from resolvers.context import Context

PUBLIC = "public"
SIGNED_IN = "signed-in"

F = TypeVar("F", bound=Callable[..., Any])


def check(ctx: Context, permission: str) -> None:
    if permission == PUBLIC:
        return
    if permission == SIGNED_IN:
        ctx.require_principal()
        return
    ctx.require(permission)


def operation(permission: str) -> Callable[[F], F]:
    """Declare `permission` for the decorated resolver function (async function or async
    generator) and check it on every call."""
    if permission not in (PUBLIC, SIGNED_IN):
        describe(permission)  # fail at import time on a name missing from the matrix

    def declare(fn: F) -> F:
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def stream(ctx: Context, *args: Any, **kwargs: Any) -> Any:
                check(ctx, permission)
                async for item in fn(ctx, *args, **kwargs):
                    yield item

            wrapped: Any = stream
        else:

            @functools.wraps(fn)
            async def call(ctx: Context, *args: Any, **kwargs: Any) -> Any:
                check(ctx, permission)
                return await fn(ctx, *args, **kwargs)

            wrapped = call
        wrapped.permission = permission
        return cast(F, wrapped)

    return declare


def permission_of(fn: Any) -> str:
    """The permission a resolver function declared with `@operation`."""
    permission = getattr(fn, "permission", None)
    if not isinstance(permission, str):
        raise TypeError(f"{getattr(fn, '__qualname__', fn)} declares no @operation permission")
    return permission
