"""The executor: graphql-core's, with plain leaves and attribute-read objects inlined.

graphql-core executes every field the same way: a path object, a resolve-info object, the
resolve function, then `complete_value` through the type's wrappers to the scalar's
`serialize`. For a plain leaf (a scalar or enum field with no resolver, no field
extension, no argument: strawberry's "basic" fields, which read one attribute) all of that
amounts to `serialize(getattr(source, name))`, and a page of 100 nodes has hundreds of
them. So, per selection set (graphql-core memoizes those per operation), this executor
plans once which fields are plain leaves and completes them inline; every other field, and
any leaf whose value is not plainly serializable (null where not allowed, a value the
scalar refuses), goes through graphql-core's own `execute_field`, so errors, paths and
nulls come out exactly as they would without the plan.

A node's `id` of a `ModelNode` type that keeps strawberry's `resolve_id` and
`resolve_typename` is inlined too: it is `base64("<Type>:<row id>")`, what
strawberry's resolver computes through an `Info` object, an argument parse and a
`GlobalID`. So is an object field read from an attribute (an edge's `node`): its
selection runs directly, with graphql-core's own error handling and strawberry's type
check, without the field's resolve-info and completion chain.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    Undefined,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path, gather_with_cancel
from strawberry import relay
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

from schema.relay import ModelNode

# How one field of a selection set is executed:
# (LEAF, response name, attribute reader, serializer, non-null): completed inline;
# (OBJECT, response name, attribute reader, object type, its type check, field type):
#     the attribute's sub-selection executed directly, without the field's resolve-info
#     and completion chain;
# (FIELD, response name, field group): graphql-core's execute_field.
LEAF, OBJECT, FIELD = 0, 1, 2
Step = tuple[Any, ...]
Plan = tuple[Step, ...]

_NODE_ID = relay.Node.resolve_id.__func__  # type: ignore[attr-defined]
_NODE_TYPENAME = relay.Node.resolve_typename.__func__  # type: ignore[attr-defined]
_NODE_ID_FIELD = relay.Node.__dict__["_id"].__func__  # the `id` field's resolver


_SLOW = object()


def _inline(step: Step, source: Any) -> Any:
    """The leaf's completed value, or _SLOW when graphql-core must complete it (a null
    where none is allowed, a value the scalar refuses, an attribute that raised): its
    `execute_field` then reports it exactly as it would have."""
    _, _, read, serialize, non_null = step
    try:
        value = read(source)
        if value is None:
            return _SLOW if non_null else None
        value = serialize(value)
    except Exception:
        return _SLOW
    return _SLOW if value is None or value is Undefined else value


class GatewayExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Keyed by the field set's identity, which graphql-core keeps alive (and so
        # unique) for the whole execution; the set is held here too, for the same reason.
        self._plans: dict[int, tuple[GroupedFieldSet, Plan | None]] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        entry = self._plans.get(id(grouped_field_set))
        if entry is None:
            entry = (grouped_field_set, self._plan(parent_type, grouped_field_set))
            self._plans[id(grouped_field_set)] = entry
        plan = entry[1]
        if plan is None:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        is_awaitable = self.is_awaitable
        try:
            for step in plan:
                kind, name = step[0], step[1]
                if kind == LEAF:
                    value = _inline(step, source_value)
                    if value is not _SLOW:
                        results[name] = value
                        continue
                elif kind == OBJECT:
                    value = self._object(step, source_value, path, parent_type, position_context)
                    if value is not _SLOW:
                        results[name] = value
                        if is_awaitable(value):
                            awaitable_fields.append(name)
                        continue
                result = self.execute_field(
                    parent_type,
                    source_value,
                    grouped_field_set[name],
                    Path(path, name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[f] for f in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return self._gathered(results, awaitable_fields)

    def _object(
        self,
        step: Step,
        source: Any,
        path: Path | None,
        parent_type: GraphQLObjectType,
        position_context: Any,
    ) -> Any:
        """An object field read from an attribute, its selection executed as graphql-core's
        `complete_object_value` would; _SLOW for anything but the plain case (a null, a
        value of another type, deferred fragments), which `execute_field` then handles."""
        _, name, read, object_type, is_type_of, return_type, details = step
        try:
            value = read(source)
        except Exception:
            return _SLOW
        if value is None or (is_type_of is not None and is_type_of(value, None) is not True):
            return _SLOW
        grouped, defers, _ = self.collect_subfields(object_type, details)
        if defers:
            return _SLOW
        field_path = Path(path, name, parent_type.name)
        try:
            completed = self.execute_collected_subfields(
                object_type, value, field_path, grouped, defers, position_context
            )
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, field_path)
            return None
        if self.is_awaitable(completed):
            return self._completed(completed, return_type, details, field_path)
        return completed

    async def _completed(
        self, completed: Any, return_type: Any, details: FieldDetailsList, path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, path)
            return None

    async def _gathered(self, results: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        if len(fields) == 1:
            results[fields[0]] = await results[fields[0]]
        else:
            values = await gather_with_cancel(*(results[f] for f in fields))
            results.update(zip(fields, values, strict=True))
        return results

    def _plan(self, parent_type: GraphQLObjectType, fields: GroupedFieldSet) -> Plan | None:
        """Which fields of this selection set are inlined; None when none is (or when
        middleware must see every field)."""
        manager = self.middleware_manager
        if manager is not None and manager._middleware_resolvers is not None:
            return None
        steps: list[Step] = []
        inlined = False
        for name, details in fields.items():
            step = _leaf(parent_type, name, details) or _object_step(parent_type, name, details)
            if step is None:
                steps.append((FIELD, name))
            else:
                steps.append(step)
                inlined = True
        return tuple(steps) if inlined else None


def _field(parent_type: GraphQLObjectType, details: FieldDetailsList) -> GraphQLField | None:
    """The field, when it takes no argument (the only kind inlined)."""
    node = details[0].node
    field = parent_type.fields.get(node.name.value)
    if field is None or field.args or node.arguments:
        return None
    return field


def _leaf(parent_type: GraphQLObjectType, name: str, details: FieldDetailsList) -> Step | None:
    field = _field(parent_type, details)
    if field is None:
        return None
    return_type: Any = field.type
    non_null = isinstance(return_type, GraphQLNonNull)
    leaf_type = return_type.of_type if non_null else return_type
    if not isinstance(leaf_type, GraphQLScalarType | GraphQLEnumType):
        return None
    read = _reader(parent_type, details[0].node.name.value, field)
    if read is None:
        return None
    return (LEAF, name, read, leaf_type.serialize, non_null)


def _object_step(
    parent_type: GraphQLObjectType, name: str, details: FieldDetailsList
) -> Step | None:
    field = _field(parent_type, details)
    if field is None:
        return None
    return_type: Any = field.type
    object_type = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    if not isinstance(object_type, GraphQLObjectType):
        return None
    is_type_of = object_type.is_type_of
    if is_type_of is not None and not _ignores_info(is_type_of):
        return None
    resolve = field.resolve
    if resolve is None or not getattr(resolve, "_is_default", False):
        return None
    read = _reader(parent_type, details[0].node.name.value, field)
    if read is None:
        return None
    return (OBJECT, name, read, object_type, is_type_of, return_type, details)


def _ignores_info(is_type_of: Callable[..., Any]) -> bool:
    """strawberry's own type check reads only the object (`_info` is unused), so it can
    be asked without a resolve-info."""
    return is_type_of.__qualname__.endswith("_get_is_type_of.<locals>.is_type_of")


def _reader(
    parent_type: GraphQLObjectType, field_name: str, field: GraphQLField
) -> Callable[[Any], Any] | None:
    resolve = field.resolve
    if resolve is not None and getattr(resolve, "_is_default", False):
        # strawberry's basic field: the resolver ignores its info and arguments, and a
        # plain StrawberryField with the default resolver reads one attribute.
        definition = field.extensions.get("strawberry-definition")
        if (
            type(definition) is StrawberryField
            and definition.base_resolver is None
            and definition.default_resolver is getattr
            and definition.python_name
        ):
            return attrgetter(definition.python_name)
        return lambda source: resolve(source, None)
    if field_name == "id" and _is_model_node_id(parent_type, field):
        prefix = f"{parent_type.name}:"
        origin = parent_type.extensions["strawberry-definition"].origin
        attr = origin.resolve_id_attr()

        def global_id(source: Any) -> Any:
            if type(source) is not origin:
                raise TypeError  # not the plain case: strawberry's resolver decides
            return base64.b64encode(f"{prefix}{getattr(source, attr)}".encode()).decode()

        return global_id
    return None


def _is_model_node_id(parent_type: GraphQLObjectType, field: GraphQLField) -> bool:
    definition = parent_type.extensions.get("strawberry-definition")
    origin = getattr(definition, "origin", None)
    strawberry_field = field.extensions.get("strawberry-definition")
    resolver = getattr(strawberry_field, "base_resolver", None)
    return (
        isinstance(origin, type)
        and issubclass(origin, ModelNode)
        and origin.resolve_id.__func__ is _NODE_ID  # type: ignore[attr-defined]
        and origin.resolve_typename.__func__ is _NODE_TYPENAME  # type: ignore[attr-defined]
        and resolver is not None
        and getattr(getattr(resolver, "wrapped_func", None), "__func__", None) is _NODE_ID_FIELD
        and not getattr(strawberry_field, "extensions", None)
    )
