"""The gateway's executor (schema/execution.py) inlines plain leaves: every answer, error
and path must be exactly what strawberry's own executor gives for the same document."""

from __future__ import annotations

import copy
import datetime as dt
import enum
from types import SimpleNamespace
from typing import Any

import pytest
import strawberry
from strawberry import relay

from schema.execution import GatewayExecutionContext
from schema.relay import ModelNode


@strawberry.enum
class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


@strawberry.type
class Item(ModelNode):
    _model = object
    _permission = "crm:read"
    id: relay.NodeID[int]
    name: str
    note: str | None
    count: int
    when: dt.datetime
    mood: Mood

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


@strawberry.type
class Custom(ModelNode):
    """A node whose id is its own business: never inlined."""

    _model = object
    _permission = "crm:read"
    id: relay.NodeID[int]

    @classmethod
    def resolve_id(cls, root: Any, *, info: Any) -> str:
        return f"custom-{root.id}"


@strawberry.type
class Holder:
    item: Item
    maybe: Item | None


@strawberry.type
class Box:
    """Objects read from attributes: the inlined object path."""

    strict: Holder
    loose: Holder | None


def items() -> list[Item]:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    rows = [
        Item(id=1, name="a", note=None, count=1, when=when, mood=Mood.HAPPY),
        Item(id=2, name="b", note="n", count=2, when=when, mood=Mood.SAD),
    ]
    broken = Item(id=3, name="c", note="x", count=3, when=when, mood=Mood.SAD)
    broken.name = None  # type: ignore[assignment]  # a null where the schema promises none
    wrong = Item(id=4, name="d", note="y", count=4, when=when, mood=Mood.SAD)
    wrong.count = "many"  # type: ignore[assignment]  # a value Int refuses
    return [*rows, broken, wrong]


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:
        return list(items())

    @strawberry.field
    def good(self) -> list[Item]:
        return items()[:2]

    @strawberry.field
    def holders(self) -> list[Holder]:
        good = items()[:2]
        return [Holder(item=good[0], maybe=None), Holder(item=good[1], maybe=good[0])]

    @strawberry.field
    def boxes(self) -> list[Box | None]:
        good, broken = items()[:2], items()[2]
        fine = Holder(item=good[0], maybe=good[1])
        bad_item = Holder(item=broken, maybe=None)  # a null inside a non-null object
        bad_maybe = Holder(item=good[0], maybe=broken)  # ... inside a nullable one
        wrong = Holder(item=good[0], maybe=fine)  # type: ignore[arg-type]  # not an Item
        return [
            Box(strict=fine, loose=None),
            Box(strict=fine, loose=bad_item),
            Box(strict=bad_item, loose=fine),
            Box(strict=bad_maybe, loose=wrong),
            None,
        ]

    @strawberry.field
    async def later(self) -> list[Box]:
        good = items()[:2]
        return [Box(strict=Holder(item=good[0], maybe=None), loose=None)]

    @strawberry.field
    def custom(self) -> Custom:
        return Custom(id=7)

    @strawberry.field
    def duck(self) -> Item:
        # Not an Item instance: strawberry's own id resolver must handle it.
        return SimpleNamespace(  # type: ignore[return-value]
            id=9, name="duck", note=None, count=0,
            when=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), mood=Mood.HAPPY,
        )  # fmt: skip


BOXES = (
    "{ boxes { strict { item { name } maybe { name } } loose { item { name } maybe { name } } } }"
)
DOCUMENTS = [
    "{ good { id name note count when mood } }",
    "{ good { id ...F } } fragment F on Item { name shout alias: count }",
    "{ items { id name count } }",  # one null in a non-null leaf, one value Int refuses
    "{ items { __typename id note } }",
    "{ holders { item { id name } maybe { id mood } } }",
    "{ custom { id } }",
    "{ boxes { strict { item { id name } maybe { id name } } loose { item { name } } } }",
    "{ boxes { loose { maybe { id count } } } }",
    BOXES,
    "{ later { strict { item { id shout } } } }",
    "{ duck { id name } }",
    "{ good { name @skip(if: true) count @include(if: false) id } }",
]


PLAIN = strawberry.Schema(query=Query, types=[Custom])
INLINED = copy.copy(PLAIN)  # strawberry converts types in place: one type system, two executors
INLINED.execution_context_class = GatewayExecutionContext


def schema(executor: Any) -> strawberry.Schema:
    return INLINED if executor else PLAIN


def shape(result: Any) -> Any:
    errors = [(e.message, e.path) for e in result.errors or []]
    return result.data, errors


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_same_answer_errors_and_paths_as_strawberry(document: str) -> None:
    plain = await schema(None).execute(document)
    inlined = await schema(GatewayExecutionContext).execute(document)
    assert shape(inlined) == shape(plain)


async def test_the_cases_above_do_reach_the_error_paths() -> None:
    """So the comparison above cannot pass by both sides failing the same way at the top."""
    result = await schema(GatewayExecutionContext).execute("{ items { id name count } }")
    assert result.data is not None
    assert [e.path for e in result.errors or []] == [["items", 2, "name"], ["items", 3, "count"]]
    assert result.data["items"][0] == {"id": "SXRlbTox", "name": "a", "count": 1}
    assert result.data["items"][2] is None and result.data["items"][3] is None
    boxes = await schema(GatewayExecutionContext).execute(BOXES)
    assert [e.path for e in boxes.errors or []] == [
        ["boxes", 1, "loose", "item", "name"],
        ["boxes", 2, "strict", "item", "name"],
        ["boxes", 3, "strict", "maybe", "name"],
        ["boxes", 3, "loose", "maybe"],
    ]
    custom = await schema(GatewayExecutionContext).execute("{ custom { id } }")
    assert custom.data == {"custom": {"id": relay.to_base64("Custom", "custom-7")}}
