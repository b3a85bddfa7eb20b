"""The gateway's per-operation work as ONE strawberry extension.

Strawberry builds a context manager per extension per hook per request, so seven
small extensions (metrics, redaction, validation rules, token limit, parser cache,
validation cache, error codes) cost more than the work they do. `GatewayExtension`
does the same things, in the same order, with three hooks:

- on_operation: adds the depth/alias/introspection rules and the token limit; after
  the operation, finishes errors (mask the unexpected, codes, request id), cuts echoed
  variable values out of messages, then records the operation's metrics;
- on_parse: parses through a process-wide LRU cache (as strawberry's ParserCache);
- on_validate: validates through a process-wide LRU cache (as strawberry's
  ValidationCache), keyed by schema, document and rules.

No `resolve` hook: a resolve hook would run for every field of every operation.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

from graphql import parse
from strawberry.schema.schema import validate_document

from schema.errors import GatewayErrors
from schema.metrics import record_operation
from schema.redaction import redact_operation

CACHE_SIZE = 512
# Process-wide, as strawberry's ParserCache / ValidationCache keep theirs; the validation
# key is (schema, document, rules), so schemas with other limits never share an entry.
_parse = functools.lru_cache(maxsize=CACHE_SIZE)(parse)
_validate = functools.lru_cache(maxsize=CACHE_SIZE)(validate_document)


class GatewayExtension(GatewayErrors):
    def __init__(self, rules: tuple[Any, ...], max_tokens: int) -> None:
        super().__init__()
        self.rules = rules
        self.max_tokens = max_tokens

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.validation_rules = ctx.validation_rules + self.rules
        ctx.parse_options["max_tokens"] = self.max_tokens
        started = time.perf_counter()
        yield from super().on_operation()  # error codes and masking (GatewayErrors)
        redact_operation(ctx)
        record_operation(ctx, started)

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.graphql_document = _parse(ctx.query, **ctx.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.pre_execution_errors = _validate(
            ctx.schema._schema, ctx.graphql_document, ctx.validation_rules
        )
        yield


def gateway_extension(rules: tuple[Any, ...], max_tokens: int) -> Callable[[], GatewayExtension]:
    """A factory for Schema.extensions: one fresh instance per operation."""
    return lambda: GatewayExtension(rules, max_tokens)
