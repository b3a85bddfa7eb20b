"""Every GraphQL error leaves with `extensions.code` and `requestId`.

Expected errors (`GatewayError`) keep their message and extensions. Anything else
is masked as INTERNAL_SERVER_ERROR; its traceback goes to the log under the same
request id.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from kit.errors import GatewayError

log = logging.getLogger("switchboard.graphql")


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    if original is None:  # parse, validation and variable errors: the caller's mistake
        return False
    if isinstance(original, GatewayError):
        return False
    return not isinstance(original, GraphQLError) or is_unexpected(original)


def code_for(error: GraphQLError) -> tuple[str, dict[str, Any]]:
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if isinstance(original, GatewayError):
        return original.code, original.extensions
    message = error.message or ""
    if message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED", {}
    if message.startswith("Variable ") or "got invalid value" in message:
        return "BAD_USER_INPUT", {}
    if error.path is None:
        return "GRAPHQL_VALIDATION_FAILED", {}
    return "BAD_USER_INPUT", {}


MASKED_MESSAGE = "Unexpected error."


def _mask(error: GraphQLError, request_id: str | None) -> GraphQLError:
    log.error(
        "unexpected error in %s",
        ".".join(str(p) for p in error.path or []) or "operation",
        exc_info=error.original_error,
        extra={"request_id": request_id},
    )
    return GraphQLError(
        MASKED_MESSAGE,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR"},
    )


_SUGGESTION = re.compile(r" Did you mean .*\?$")


def finish_errors(
    errors: list[GraphQLError], request_id: str | None, *, hide_suggestions: bool = False
) -> list[GraphQLError]:
    """Mask the unexpected (logging their traceback), give every error its code and the
    request id. Errors are copied, never changed in place: ValidationCache hands the same
    error objects to every request that sends the same invalid document. Idempotent, so
    the HTTP view can run it again over errors that bypassed the extension (strawberry
    answers a parse failure raised inside ParserCache outside the operation hooks)."""
    finished = []
    for error in errors:
        current = error.extensions or {}
        if "code" in current and current.get("requestId") == request_id:
            finished.append(error)
            continue
        if "code" in current:
            extensions: dict[str, Any] = dict(current)
        elif is_unexpected(error):
            error = _mask(error, request_id)
            extensions = dict(error.extensions or {})
        else:
            code, extra = code_for(error)
            extensions = {**current, **extra, "code": code}
        if request_id:
            extensions["requestId"] = request_id
        message = error.message
        if hide_suggestions:
            # "Did you mean …?" spells out the schema to a caller who may not introspect it.
            message = _SUGGESTION.sub("", message)
        finished.append(
            GraphQLError(
                message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                original_error=error.original_error,
                extensions=extensions,
            )
        )
    return finished


class GatewayErrors(MaskErrors):
    """MaskErrors with a predicate (only unexpected errors are masked), plus codes."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message=MASKED_MESSAGE)

    def _request_id(self) -> str | None:
        context = self.execution_context.context
        return getattr(context, "request_id", None)

    def _hide_suggestions(self) -> bool:
        return False

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return finish_errors(errors, self._request_id(), hide_suggestions=self._hide_suggestions())
