"""Cache hints on fields, and which operations they make cacheable (as Apollo's
`@cacheControl` and its response cache decide it).

A field declares `directives=[cache_hint(max_age)]` when its answer depends only on
the caller (scope PRIVATE) and changes rarely; the hint shows in the SDL as
`@cacheControl(maxAge: …, scope: PRIVATE)`.

`cache_policy` decides once per (query text, operation name), from the schema and the
selection, fragments included: an operation is cacheable only if it is a query and
every field in it has a hint, or is a leaf (scalar or enum) under a hinted field, or is
`__typename`. Its max age is the smallest hint. Anything else (an unhinted object
field, an unhinted root field, introspection, an abstract type, a document that does
not parse or names no such operation) is not cacheable.
"""

from __future__ import annotations

import enum
from typing import Any

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
    parse,
)
from strawberry.schema_directive import Location

from schema.memo import Memo

POLICY_CACHE_SIZE = 512


@strawberry.enum(description="Who may share a cached answer.")
class CacheControlScope(enum.Enum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="cacheControl",
    description="How long the field's answer may be cached, and for whom (PRIVATE: per "
    "caller). The gateway also bounds it by `VIEWER_CACHE_SECONDS`.",
)
class CacheControl:
    max_age: int = strawberry.field(description="Seconds.")
    scope: CacheControlScope = strawberry.field(
        default=CacheControlScope.PRIVATE, description="PRIVATE: per caller."
    )


def cache_hint(max_age: int, scope: CacheControlScope = CacheControlScope.PRIVATE) -> Any:
    return CacheControl(max_age=max_age, scope=scope)


def _hint_of(field: Any) -> int | None:
    definition = field.extensions.get("strawberry-definition")
    for directive in getattr(definition, "directives", ()) or ():
        if isinstance(directive, CacheControl):
            return directive.max_age
    return None


class _NotCacheable(Exception):
    pass


def _walk(
    schema: GraphQLSchema,
    selection_set: SelectionSetNode | None,
    parent: GraphQLObjectType,
    parent_hinted: bool,
    fragments: dict[str, FragmentDefinitionNode],
    seen: frozenset[str],
) -> float:
    """The smallest hint under `selection_set` (inf when no field adds one)."""
    smallest = float("inf")
    for sel in selection_set.selections if selection_set is not None else ():
        if isinstance(sel, FieldNode):
            name = sel.name.value
            if name == "__typename":
                continue
            field = parent.fields.get(name)
            if field is None:  # introspection (__schema, __type) or an unknown field
                raise _NotCacheable
            hint = _hint_of(field)
            named = get_named_type(field.type)
            if hint is None:
                if parent_hinted and is_leaf_type(named):
                    continue
                raise _NotCacheable
            if hint <= 0:
                raise _NotCacheable
            smallest = min(smallest, hint)
            if sel.selection_set is not None:
                if not isinstance(named, GraphQLObjectType):
                    raise _NotCacheable  # interfaces and unions: not worth the analysis
                smallest = min(
                    smallest, _walk(schema, sel.selection_set, named, True, fragments, seen)
                )
            continue
        if isinstance(sel, InlineFragmentNode):
            condition, inner = sel.type_condition, sel.selection_set
        elif isinstance(sel, FragmentSpreadNode):
            fragment = fragments.get(sel.name.value)
            if fragment is None or sel.name.value in seen:
                raise _NotCacheable
            seen = seen | {sel.name.value}
            condition, inner = fragment.type_condition, fragment.selection_set
        else:
            raise _NotCacheable
        if condition is not None and condition.name.value != parent.name:
            raise _NotCacheable
        smallest = min(smallest, _walk(schema, inner, parent, parent_hinted, fragments, seen))
    return smallest


def policy_of(schema: GraphQLSchema, document: Any, operation_name: str | None) -> float | None:
    """Seconds an error-free answer of this operation may be cached per caller, or None."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        operation = operations[0] if len(operations) == 1 else None
    else:
        operation = next((o for o in operations if o.name and o.name.value == operation_name), None)
    if operation is None or operation.operation != OperationType.QUERY:
        return None
    root = schema.query_type
    if root is None:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    try:
        smallest = _walk(schema, operation.selection_set, root, False, fragments, frozenset())
    except _NotCacheable:
        return None
    return None if smallest == float("inf") else smallest


# Process-wide, like the parse and validation caches in schema/extensions.py; keyed by
# the schema object too, so schemas with other types never share an entry.
_policies: Memo[float | None] = Memo(POLICY_CACHE_SIZE)


def cached_policy(
    schema: GraphQLSchema, query: str, operation_name: str | None, document: Any = None
) -> float | None:
    """`policy_of` once per (schema, query text, operation name); `document` is the parsed
    query when the caller has it (parsed here otherwise)."""

    def compute() -> float | None:
        try:
            parsed = parse(query) if document is None else document
            return policy_of(schema, parsed, operation_name)
        except GraphQLError:
            return None

    return _policies.compute((schema, query, operation_name), compute)
