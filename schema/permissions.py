"""Root field declarations: the permission comes from the resolver function the field
calls (`operation=`, declared there once with `resolvers.operations.operation`).

`query`, `mutation` and `subscription` wrap strawberry's decorators so every root field
gets the permission class (the caller is refused before its arguments are converted) and
prints the roles that hold the permission into its description (and so into
`schema.graphql`). `permission=` is still accepted for fields that call no single
operation (e.g. `me`, `node`).
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types import Info

from kit.errors import Forbidden, Unauthenticated
from kit.roles import AUTHORITY, allowed, describe
from resolvers.authority import confirm
from resolvers.operations import PUBLIC, SIGNED_IN, permission_of


class Authenticated(BasePermission):
    """Any signed-in caller (user or API key), whatever the role."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if info.context.principal is None:
            raise Unauthenticated()
        return True


class HasPermission(BasePermission):
    def __init__(self, permission: str) -> None:
        describe(permission)  # fail at import time on a permission missing from the matrix
        self.permission = permission

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = info.context.principal
        if principal is None:
            raise Unauthenticated()
        if not allowed(principal.role, self.permission):
            raise Forbidden()
        return True


class HasCurrentPermission(HasPermission):
    """For mutations that grant or change authority (`kit.roles.AUTHORITY`): the
    caller's membership is read from the store now, not taken from its token or a cache
    (`resolvers.authority.confirm`), and the operation runs with that reading."""

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:  # type: ignore[override]
        if info.context.principal is None:
            raise Unauthenticated()
        await confirm(info.context, self.permission)
        return True


def _decorate(kind: Any, permission: str, description: str, kwargs: dict[str, Any]) -> Any:
    if permission == PUBLIC:
        checks: list[BasePermission] = []
        note = "Public: no authentication needed."
    elif permission == SIGNED_IN:
        checks = [Authenticated()]
        note = "Requires authentication, any role."
    elif kind is strawberry.mutation and permission in AUTHORITY:
        checks = [HasCurrentPermission(permission)]
        note = describe(permission)
    else:
        checks = [HasPermission(permission)]
        note = describe(permission)
    extensions = list(kwargs.pop("extensions", []))
    if checks:
        extensions.insert(0, PermissionExtension(checks, use_directives=False))
    return kind(description=f"{description.rstrip()} {note}", extensions=extensions, **kwargs)


def _permission(operation: Any, permission: str | None) -> str:
    if (operation is None) == (permission is None):
        raise TypeError("a root field names either operation= or permission=")
    return permission_of(operation) if operation is not None else str(permission)


def query(
    *, description: str, operation: Any = None, permission: str | None = None, **kwargs: Any
) -> Any:
    return _decorate(strawberry.field, _permission(operation, permission), description, kwargs)


def mutation(
    *, description: str, operation: Any = None, permission: str | None = None, **kwargs: Any
) -> Any:
    return _decorate(strawberry.mutation, _permission(operation, permission), description, kwargs)


# Field metadata marking a subscription whose executions may be shared (below).
SHARED = "switchboard.shared_execution"


def subscription(
    *,
    description: str,
    operation: Any = None,
    permission: str | None = None,
    shared: bool = False,
    **kwargs: Any,
) -> Any:
    """A root subscription field. `shared=True` lets subscribers with the same operation
    text, operation name, variables, tenant and role share one execution and one encoded
    frame per event (gateway/http/fanout.py). Declare it only when everything the field
    can reach depends on no more than the caller's tenant and role — or, like `activity`,
    makes its per-caller checks through `ctx.audience` (resolvers/context.py). A field
    whose output differs per user (its own rows, its own stream, a per-user redaction)
    must stay unshared."""
    if shared:
        kwargs["metadata"] = {**kwargs.get("metadata", {}), SHARED: True}
    return _decorate(
        strawberry.subscription, _permission(operation, permission), description, kwargs
    )


def shared_subscriptions(schema: Any) -> frozenset[str]:
    """Names of the root subscription fields of `schema` (a graphql-core schema) declared
    `shared=True`."""
    root = schema.subscription_type
    if root is None:
        return frozenset()
    names = set()
    for name, field in root.fields.items():
        definition = (field.extensions or {}).get("strawberry-definition")
        if definition is not None and (definition.metadata or {}).get(SHARED):
            names.add(name)
    return frozenset(names)
