"""The gateway's per-operation work as ONE strawberry extension.

Strawberry builds a context manager per extension per hook per request, so seven
small extensions (metrics, redaction, validation rules, token limit, parser cache,
validation cache, error codes) cost more than the work they do. `GatewayExtension`
does the same things, in the same order, with three hooks:

- on_operation: adds the depth/alias/introspection rules and the token limit; after
  the operation, finishes errors (mask the unexpected, codes, request id), cuts echoed
  variable values out of messages, records the operation's metrics, and, when the view
  waits to store the answer (`kit/response_cache.py`), says whether and how long
  an error-free answer may be cached (`schema/cache_control.py`);
- on_parse: parses through a process-wide LRU cache (as strawberry's ParserCache);
- on_validate: validates through a process-wide LRU cache keyed by schema, query TEXT
  and rules. Strawberry's ValidationCache keys on the DocumentNode, and graphql-core
  nodes hash their whole tree on every call; the text says the same (the parse of a
  text is cached and deterministic) and a str caches its hash. Then the operation's cost
  (`schema/limits.py`) is checked against `MAX_QUERY_COST` and reported in the answer's
  `extensions.cost`.

No `resolve` hook: a resolve hook would run for every field of every operation.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError, GraphQLSchema, parse
from strawberry.schema.schema import validate_document
from strawberry.types.graphql import OperationType

from kit.text import find_bad_text
from schema.cache_control import cached_policy
from schema.errors import GatewayErrors
from schema.limits import Figures, operation_figures, uses_introspection
from schema.memo import Memo
from schema.metrics import record_operation
from schema.redaction import redact_operation

CACHE_SIZE = 512
# Process-wide, as strawberry's ParserCache / ValidationCache keep theirs; the validation
# key is (schema, query text, rules), so schemas with other limits never share an entry.
_parse = functools.lru_cache(maxsize=CACHE_SIZE)(parse)
_validated: Memo[list[GraphQLError]] = Memo(CACHE_SIZE)
# Figures of documents whose page sizes are all literals: they depend on the text only.
_figures: Memo[Figures] = Memo(CACHE_SIZE)
_introspects: Memo[bool] = Memo(CACHE_SIZE)


@dataclass(frozen=True)
class Limits:
    """The request limits one schema enforces (from the settings)."""

    depth: int
    tokens: int
    aliases: int
    fragments: int
    cost: int
    page: int = 100  # MAX_PAGE_SIZE
    introspection: str = "public"  # public | authenticated | off
    suggestions_for_anonymous: bool = True


def _validate(
    schema: GraphQLSchema, query: str | None, document: Any, rules: tuple[Any, ...]
) -> list[GraphQLError]:
    return _validated.compute(
        (schema, query, rules), lambda: validate_document(schema, document, rules)
    )


class GatewayExtension(GatewayErrors):
    def __init__(self, rules: tuple[Any, ...], limits: Limits) -> None:
        super().__init__()
        self.rules = rules
        self.limits = limits
        self.cost: int | None = None

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.validation_rules = ctx.validation_rules + self.rules
        ctx.parse_options["max_tokens"] = self.limits.tokens
        started = time.perf_counter()
        yield from super().on_operation()  # error codes and masking (GatewayErrors)
        redact_operation(ctx)
        record_operation(ctx, started)
        _cache_policy(ctx)

    def _process_result(self, result: object) -> None:
        # MaskErrors' own isinstance against a runtime_checkable Protocol costs more
        # than the rest of the hook.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.graphql_document = _parse(ctx.query, **ctx.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        errors = _validate(
            ctx.schema._schema, ctx.query, ctx.graphql_document, ctx.validation_rules
        )
        if not errors:
            errors = (
                self._check_introspection(ctx)
                or _check_variables(ctx.variables)
                or self._check_cost(ctx)
            )
        ctx.pre_execution_errors = errors
        yield

    def _hide_suggestions(self) -> bool:
        if self.limits.suggestions_for_anonymous:
            return False
        return getattr(self.execution_context.context, "principal", None) is None

    def _check_introspection(self, ctx: Any) -> list[GraphQLError]:
        """INTROSPECTION: `public`, `authenticated` (tools use an API key) or `off`."""
        policy = self.limits.introspection
        if policy == "public":
            return []
        key = ("introspection", ctx.query)
        asks = _introspects.compute(key, lambda: uses_introspection(ctx.graphql_document))
        if not asks:
            return []
        if policy == "authenticated" and getattr(ctx.context, "principal", None) is not None:
            return []
        if policy == "off":
            message, code = "Introspection is turned off on this gateway.", "FORBIDDEN"
        else:
            message = "Introspection needs a signed-in caller; send an API key."
            code = "UNAUTHENTICATED"
        return [GraphQLError(message, extensions={"code": code})]

    def _check_cost(self, ctx: Any) -> list[GraphQLError]:
        schema, document = ctx.schema._schema, ctx.graphql_document
        key = (schema, ctx.query, ctx.operation_name)
        figures = _figures.get(key)
        if figures is None:
            figures = operation_figures(
                schema, document, ctx.operation_name, ctx.variables, self.limits.page
            )
            if figures is not None and not figures.variable_pages:
                _figures[key] = figures
        if figures is None:
            return []
        self.cost = figures.cost
        if figures.cost <= self.limits.cost:
            return []
        return [
            GraphQLError(
                f"The operation would cost {figures.cost}; at most {self.limits.cost} is "
                "allowed. Ask for smaller pages (first/last) or fewer nested lists.",
                extensions={"cost": figures.cost, "limit": self.limits.cost},
            )
        ]

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requested": self.cost, "limit": self.limits.cost}}


def _check_variables(variables: dict[str, Any] | None) -> list[GraphQLError]:
    """Variables with a NUL or an unpaired surrogate anywhere are refused whole, before
    anything runs (a batch item would otherwise fail mid-write)."""
    if not variables:
        return []
    found = find_bad_text(variables)
    if found is None:
        return []
    path, problem = found
    return [
        GraphQLError(
            f"Variable '${path}' {problem}.",
            extensions={"code": "BAD_USER_INPUT", "details": {path: problem}},
        )
    ]


def _cache_policy(ctx: Any) -> None:
    """Tell a waiting response cache how long this answer may be kept (if at all)."""
    request = getattr(ctx.context, "request", None)
    state = request.scope.get("state") if request is not None else None
    pending = state.get("response_cache") if state else None
    if pending is None:
        return
    result = ctx.result
    if (
        ctx.pre_execution_errors
        or result is None
        or getattr(result, "errors", None)
        or getattr(result, "data", None) is None
        or ctx.operation_type is not OperationType.QUERY
    ):
        return
    pending.max_age = cached_policy(
        ctx.schema._schema, ctx.query, ctx.operation_name, ctx.graphql_document
    )
    pending.operation_name = ctx.operation_name


def gateway_extension(rules: tuple[Any, ...], limits: Limits) -> Callable[[], GatewayExtension]:
    """A factory for Schema.extensions: one fresh instance per operation."""
    return lambda: GatewayExtension(rules, limits)
