"""Relay plumbing: Node with global ids, generic connections over keyset pages."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from enum import Enum
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from kit.errors import NotFound
from resolvers import nodes
from resolvers.pagination import Page

NodeT = TypeVar("NodeT")

# The arguments of every connection field.
First = Annotated[
    int | None, strawberry.argument(description="Page size (default 20, at most the maximum).")
]
After = Annotated[
    str | None, strawberry.argument(description="Cursor after which the page starts.")
]


@strawberry.type(description="Where a page of a connection sits in the whole list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow this page.")
    has_previous_page: bool = strawberry.field(description="Items precede this page.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first edge.")
    end_cursor: str | None = strawberry.field(
        description="Cursor of the last edge; pass it as `after` for the next page."
    )


@strawberry.enum(description="Sort direction of a list.")
class OrderDirection(Enum):
    ASC = "asc"
    DESC = "desc"


@strawberry.type(description="One item of a connection with its cursor.")
class Edge(Generic[NodeT]):
    cursor: str = strawberry.field(description="Opaque position of this item.")
    node: NodeT = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list, Relay style.")
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]] = strawberry.field(description="The items of this page.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")
    _page: strawberry.Private[Page[Any] | None] = None

    @strawberry.field(description="Number of items in the whole list (one extra query).")
    async def total_count(self) -> int:
        return 0 if self._page is None else await self._page.total_count()

    @classmethod
    def of(cls, page: Page[Any], convert: Callable[[Any], NodeT]) -> Connection[NodeT]:
        edges = [
            Edge(cursor=c, node=convert(row))
            for c, row in zip(page.cursors, page.items, strict=True)
        ]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next,
                has_previous_page=page.has_previous,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
            _page=page,
        )


class ModelNode(relay.Node):
    """A Node backed by one tenant-scoped Tortoise model.

    Subclasses set `_model` and `_permission` and implement `from_row`. `node(id:)`
    lookups go through `resolvers.nodes`, which scopes by the caller's tenant.
    """

    _model: ClassVar[type]
    _permission: ClassVar[str]

    @classmethod
    def from_row(cls, row: Any) -> Self:
        """Copy the row's attributes named like the type's plain fields; keep the row as `_row`."""
        names = [
            f.python_name
            for f in cls.__strawberry_definition__.fields  # type: ignore[attr-defined]
            if f.base_resolver is None and f.python_name != "id"
        ]
        values = {name: getattr(row, name) for name in names}
        obj = cls(id=row.id, **values)  # type: ignore[call-arg]
        obj._row = row  # type: ignore[attr-defined]
        return obj

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        ids = list(node_ids)
        rows = await nodes.load(info.context, cls._model, cls._permission, ids)
        if required and any(r is None for r in rows):
            raise NotFound(f"{cls.__name__} not found.")
        return [None if r is None else cls.from_row(r) for r in rows]


async def resolve_global_id(info: Info, gid: relay.GlobalID) -> relay.Node | None:
    """`node(id:)`: the object, or None for an id of no node type, of a missing row or of
    another organization (the caller cannot tell these apart)."""
    definition = info.schema.get_type_by_name(gid.type_name)
    origin = getattr(definition, "origin", None)
    if not (isinstance(origin, type) and issubclass(origin, relay.Node)):
        return None
    if nodes.database_id(gid.node_id) is None:
        return None
    found = origin.resolve_nodes(info=info, node_ids=[gid.node_id], required=False)
    if inspect.isawaitable(found):
        found = await found
    return next(iter(found), None)


def decode_id(gid: relay.GlobalID | str, *types: str) -> int:
    """The database id inside a global id of one of `types`; anything else is NOT_FOUND."""
    if isinstance(gid, str):
        try:
            gid = relay.GlobalID.from_id(gid)
        except Exception:
            raise NotFound("Not found.") from None
    if types and gid.type_name not in types:
        raise NotFound(f"{types[0]} not found.")
    db_id = nodes.database_id(gid.node_id)
    if db_id is None:
        raise NotFound(f"{types[0] if types else 'Object'} not found.")
    return db_id


def encode_id(type_name: str, db_id: int) -> relay.GlobalID:
    return relay.GlobalID(type_name, str(db_id))


async def maybe(awaitable: Awaitable[Any] | None) -> Any:
    return None if awaitable is None else await awaitable
