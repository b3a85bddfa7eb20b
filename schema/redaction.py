"""Variable errors never echo the caller's input values.

graphql-core describes a variable that does not fit its type with the whole value
it received (`…required field 'provider', found: {'secrets': {'apiKey': 'sk-…'}}`),
so a credential, password or token sent with one mistake would come back in the
answer and in any log of it. `redact_operation` (run by schema/extensions.py) cuts
the echoed value out of those messages and keeps the explanation (which field, which
type).
"""

from __future__ import annotations

import re
from typing import Any

from strawberry.types import ExecutionContext

_FOUND = re.compile(r"[;,]?\s*found:\s.*\Z", re.S)
_CANNOT_REPRESENT = re.compile(r"(cannot represent [^:]*?):\s.*\Z", re.S)
_INVALID_VALUE = re.compile(r"(got invalid value)\s.*?(; |\Z)", re.S)


def redact_variable_message(message: str) -> str:
    if not message.startswith("Variable '$"):
        return message
    message = _FOUND.sub(".", message)
    message = _CANNOT_REPRESENT.sub(r"\1.", message)
    return _INVALID_VALUE.sub(r"\1\2", message)


def _redact(errors: Any) -> None:
    for error in errors or ():
        message = getattr(error, "message", None)
        if isinstance(message, str):
            cleaned = redact_variable_message(message)
            if cleaned != message:
                error.message = cleaned
                error.args = (cleaned,)


def redact_operation(ctx: ExecutionContext) -> None:
    """Cut echoed variable values out of a finished operation's errors."""
    _redact(ctx.pre_execution_errors)
    result = ctx.result
    if result is not None:
        _redact(getattr(result, "errors", None))
