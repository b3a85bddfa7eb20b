"""Request limits measured in one pass over the document: depth, aliases, fragments, cost.

Strawberry's depth and alias limiters walk into a fragment at every spread, so a document
of fragments each spreading the next one twice costs 2^n walks: 850 bytes blocked a
process for seconds. Here each fragment is measured once and its figures are reused at
every spread (`_Measure`), so validation is linear in the document, whatever it spreads.

- depth: nested fields below the root, as strawberry counted it (a leaf adds nothing,
  `__` fields are left to graphql-core's MaxIntrospectionDepthRule);
- aliases: aliased fields as they would execute, a fragment counting once per spread;
- fragments: definitions per document (`MAX_QUERY_FRAGMENTS`);
- cost: what the operation may make the gateway materialise: every object or list field
  costs its weight (1, or `FIELD_WEIGHTS` for fields that call a vendor), and a field
  with `first`/`last` multiplies what is below it by that page size (the default page,
  20, when absent; a variable counts with its value; never more than MAX_PAGE_SIZE, which
  the list itself enforces). Leaves cost nothing. Lists without
  a page argument count as one item: they are short by construction (memberships).

Depth, aliases and fragments depend on the text only, so they run as a validation rule
(cached with the rest of validation). Cost may depend on variables, so the extension
asks `operation_cost` after validation; a document whose page sizes are all literals is
measured once per text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    BREAK,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    is_leaf_type,
)

from kit.text import text_problem

DEFAULT_PAGE = 20
PAGE_ARGUMENTS = ("first", "last")
# Fields whose every call reaches a vendor or writes in bulk weigh more than a read.
FIELD_WEIGHTS: dict[str, int] = {
    "Mutation.createChatCompletion": 50,
    "Subscription.chatCompletion": 50,
    "Mutation.upsertContacts": 25,
    "Mutation.upsertLeads": 25,
    "Mutation.verifyCredential": 10,
    "Mutation.sendTestWebhook": 10,
}


@dataclass(frozen=True)
class Figures:
    depth: int
    aliases: int
    cost: int
    variable_pages: bool  # a page size came from a variable: cost depends on the call


class _Measure:
    """Figures of selection sets, each fragment measured once (memo by name)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any] | None,
        max_page: int | None = None,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables or {}
        # A larger page is refused by the list itself (BAD_USER_INPUT naming `first`).
        self.max_page = max_page
        self.memo: dict[str, Figures] = {}
        self.active: set[str] = set()  # spreads being measured (cycles are invalid anyway)

    def fragment(self, name: str) -> Figures:
        known = self.memo.get(name)
        if known is not None:
            return known
        definition = self.fragments.get(name)
        if definition is None or name in self.active:
            return Figures(0, 0, 0, False)
        self.active.add(name)
        parent = self.schema.get_type(definition.type_condition.name.value)
        figures = self.selections(definition.selection_set, parent)
        self.active.discard(name)
        self.memo[name] = figures
        return figures

    def selections(self, selection_set: SelectionSetNode | None, parent: Any) -> Figures:
        depth = aliases = cost = 0
        variable = False
        if selection_set is None:
            return Figures(0, 0, 0, False)
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                f = self.field(node, parent)
            elif isinstance(node, FragmentSpreadNode):
                f = self.fragment(node.name.value)
            elif isinstance(node, InlineFragmentNode):
                inner = parent
                if node.type_condition is not None:
                    inner = self.schema.get_type(node.type_condition.name.value)
                f = self.selections(node.selection_set, inner)
            else:  # pragma: no cover - graphql has no other selection kinds
                continue
            depth = max(depth, f.depth)
            aliases += f.aliases
            cost += f.cost
            variable = variable or f.variable_pages
        return Figures(depth, aliases, cost, variable)

    def field(self, node: FieldNode, parent: Any) -> Figures:
        name = node.name.value
        alias = 1 if node.alias is not None else 0
        if name.startswith("__"):
            return Figures(0, alias, 0, False)
        definition = getattr(parent, "fields", {}).get(name) if parent is not None else None
        field_type = get_named_type(definition.type) if definition is not None else None
        if node.selection_set is None or field_type is None or is_leaf_type(field_type):
            return Figures(0, alias, 0, False)
        inner = self.selections(node.selection_set, field_type)
        page, variable = self.page_size(node)
        weight = FIELD_WEIGHTS.get(f"{parent.name}.{name}", 1)
        return Figures(
            inner.depth + 1,
            alias + inner.aliases,
            weight + page * inner.cost,
            variable or inner.variable_pages,
        )

    def page_size(self, node: FieldNode) -> tuple[int, bool]:
        """The items a page argument asks for (1 for a field without one)."""
        size, variable = self._page_size(node)
        if self.max_page is not None:
            size = min(size, self.max_page)
        return size, variable

    def _page_size(self, node: FieldNode) -> tuple[int, bool]:
        has_page = False
        for argument in node.arguments or ():
            if argument.name.value not in PAGE_ARGUMENTS:
                continue
            has_page = True
            value = argument.value
            if isinstance(value, IntValueNode):
                return max(int(value.value), 0), False
            if isinstance(value, VariableNode):
                given = self.variables.get(value.name.value)
                if isinstance(given, int) and not isinstance(given, bool):
                    return max(given, 0), True
                return DEFAULT_PAGE, True
        return (DEFAULT_PAGE if has_page or self._is_connection(node) else 1), False

    def _is_connection(self, node: FieldNode) -> bool:
        selections = node.selection_set.selections if node.selection_set else ()
        return any(isinstance(s, FieldNode) and s.name.value == "edges" for s in selections)


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None = None,
    max_page: int | None = None,
) -> Figures:
    root = schema.get_root_type(operation.operation)
    return _Measure(schema, _fragments(document), variables, max_page).selections(
        operation.selection_set, root
    )


def limits_rule(max_depth: int, max_aliases: int, max_fragments: int) -> type[ValidationRule]:
    """A validation rule enforcing depth, aliases and fragments, linear in the document."""

    class QueryLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)

        def enter_document(self, node: DocumentNode, *_: Any) -> Any:
            fragments = _fragments(node)
            if len(fragments) > max_fragments:
                self.report_error(
                    GraphQLError(
                        f"The document defines {len(fragments)} fragments; "
                        f"at most {max_fragments} are allowed.",
                        extensions={"limit": max_fragments},
                    )
                )
                return BREAK
            measurer = _Measure(self.context.schema, fragments, None)
            for operation in _operations(node):
                root = self.context.schema.get_root_type(operation.operation)
                figures = measurer.selections(operation.selection_set, root)
                label = operation.name.value if operation.name else "anonymous"
                if figures.depth > max_depth:
                    self.report_error(
                        GraphQLError(
                            f"'{label}' exceeds maximum operation depth of {max_depth}.",
                            operation,
                            extensions={"limit": max_depth},
                        )
                    )
                if figures.aliases > max_aliases:
                    self.report_error(
                        GraphQLError(
                            f"'{label}' uses {figures.aliases} aliases; "
                            f"at most {max_aliases} aliases are allowed.",
                            operation,
                            extensions={"limit": max_aliases},
                        )
                    )
            return BREAK

    return QueryLimits


class StorableStrings(ValidationRule):
    """String literals in the document carry no NUL and no unpaired surrogate
    (kit/text.py); variables are checked by the extension, literals here, once per
    text thanks to the validation cache."""

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        problem = text_problem(node.value)
        if problem is not None:
            self.report_error(
                GraphQLError(f"A string value {problem}.", node, extensions={"field": problem})
            )


def operation_figures(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    max_page: int | None = None,
) -> Figures | None:
    """The figures of the operation that will run (None when there is no such operation;
    graphql-core reports that itself)."""
    operations = _operations(document)
    if operation_name:
        chosen = [o for o in operations if o.name and o.name.value == operation_name]
    else:
        chosen = operations if len(operations) == 1 else []
    if not chosen:
        return None
    return measure(schema, document, chosen[0], variables, max_page)


INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


def uses_introspection(document: DocumentNode) -> bool:
    """The document asks for the schema (`__schema`, `__type`; `__typename` is data)."""
    stack: list[Any] = [
        d.selection_set for d in document.definitions if hasattr(d, "selection_set")
    ]
    while stack:
        selection_set = stack.pop()
        if selection_set is None:
            continue
        for node in selection_set.selections:
            if isinstance(node, FieldNode) and node.name.value in INTROSPECTION_FIELDS:
                return True
            stack.append(getattr(node, "selection_set", None))
    return False
