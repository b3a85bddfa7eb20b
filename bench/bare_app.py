"""The baselines' server: bare Strawberry over memory, as fast as Strawberry naturally goes.

Plain synchronous resolvers, data built once, the parser and validation caches on, no
extensions, no store. `{ hello }` and a `contacts(first:)` page of the gateway's shape
(ids already encoded as global ids, owners and open tasks as plain lists).

    .venv/bin/python -m uvicorn bare_app:app --app-dir bench   (what bench/_http.py runs)
    (bare_app:orjson_app: the same with orjson as the JSON encoder)
"""

from __future__ import annotations

import base64
import datetime as dt

import orjson
import strawberry
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

PAGE = 100
TASKS_PER_CONTACT = 2


@strawberry.type
class MemUser:
    name: str


@strawberry.type
class MemTask:
    title: str
    due_at: dt.datetime | None


@strawberry.type
class MemContact:
    id: strawberry.ID
    name: str
    email: str | None
    company: str | None
    owner: MemUser | None
    open_tasks: list[MemTask]


@strawberry.type
class MemEdge:
    cursor: str
    node: MemContact


@strawberry.type
class MemPageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class MemConnection:
    edges: list[MemEdge]
    page_info: MemPageInfo


def _contacts() -> list[MemEdge]:
    owners = [MemUser(name=f"Owner {i}") for i in range(5)]
    due = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    return [
        MemEdge(
            cursor=base64.b64encode(f"cursor:{i}".encode()).decode(),
            node=MemContact(
                id=strawberry.ID(base64.b64encode(f"Contact:{i + 1}".encode()).decode()),
                name=f"Contact {i:03}",
                email=f"c{i}@example.com",
                company="Acme",
                owner=owners[i % 5],
                open_tasks=[
                    MemTask(title=f"Task {j} of Contact {i:03}", due_at=due + dt.timedelta(days=j))
                    for j in range(TASKS_PER_CONTACT)
                ],
            ),
        )
        for i in range(PAGE)
    ]


EDGES = _contacts()


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"

    @strawberry.field
    def contacts(self, first: int) -> MemConnection:
        edges = EDGES[:first]
        return MemConnection(
            edges=edges,
            page_info=MemPageInfo(has_next_page=False, end_cursor=edges[-1].cursor),
        )


schema = strawberry.Schema(
    query=Query,
    extensions=[lambda: ParserCache(maxsize=512), lambda: ValidationCache(maxsize=512)],
)


class OrjsonGraphQL(GraphQL):
    """The same view answering through orjson, as the gateway does: the stricter
    baseline for pages, where encoding the answer is a large share of the work."""

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def create_app(view: type[GraphQL] = GraphQL) -> Starlette:
    return Starlette(
        routes=[Route("/graphql", view(schema, graphql_ide=None), methods=["GET", "POST"])]
    )


app = create_app()
orjson_app = create_app(OrjsonGraphQL)
