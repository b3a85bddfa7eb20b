"""What text the gateway accepts: no NUL, no unpaired surrogate, and single-line names.

PostgreSQL refuses NUL in text columns and UTF-8 cannot encode a lone surrogate (JSON's
`"\\ud800"` decodes to one), so either would fail deep inside a write, after part of it
was done. They are refused at the door instead: in GraphQL variables and literals
(schema/extensions.py, schema/limits.py), in every other decoded body that is stored.
Names end up in mail headers and log lines, where CR/LF would start a new header.

Part of kit/: imports nothing but the standard library (and kit.errors, lazily).
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\x00-\x1f\x7f\u2028\u2029\x85]")
MAX_DEPTH = 64
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored, or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character"
    return "contains an unpaired surrogate (not valid Unicode)"


def find_bad_text(value: Any, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """The first (path, problem) among the strings of a decoded JSON value, keys
    included; nesting beyond MAX_DEPTH is a problem too."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else (path, problem)
    if depth > MAX_DEPTH:
        return (path, f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                return (where, problem)
            found = find_bad_text(item, where, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_bad_text(item, f"{path}.{index}" if path else str(index), depth + 1)
            if found is not None:
                return found
    return None


def single_line_problem(value: str) -> str | None:
    """Why `value` cannot be a one-line name (a header value, a log field), or None."""
    if _LINE_BREAKS.search(value) is not None:
        return "must be one line, without control characters"
    return text_problem(value)


def header_safe(value: str) -> str:
    """`value` with line breaks and control characters turned into spaces: for a mail
    header built from stored text that predates the name checks."""
    return _LINE_BREAKS.sub(" ", _UNSTORABLE.sub("", value)).strip()


def one_line(value: str, field: str) -> str:
    """`value` stripped, refused (BAD_USER_INPUT on `field`) when it is not one clean line."""
    from kit.errors import BadUserInput

    cleaned = value.strip()
    problem = single_line_problem(cleaned)
    if problem is not None:
        raise BadUserInput(f"{field} {problem}.", details={field: problem})
    return cleaned


def bounded_text(value: str | None, field: str, limit: int, *, single_line: bool) -> str | None:
    """`value` stripped and checked (storable; one line when `single_line`; at most `limit`
    characters), else BAD_USER_INPUT on `field`; None stays None (not given)."""
    from kit.errors import BadUserInput

    if value is None:
        return None
    cleaned = value.strip()
    problem = (single_line_problem if single_line else text_problem)(cleaned)
    if problem is not None:
        raise BadUserInput(f"Invalid {field}.", details={field: problem})
    if len(cleaned) > limit:
        raise BadUserInput(f"{field} is too long.", details={field: f"at most {limit} characters"})
    return cleaned


def normalize_email(email: str, field: str = "email") -> str:
    """`email` trimmed and lower-cased, refused (BAD_USER_INPUT on `field`) unless it is
    one plausible address of at most 320 characters."""
    from kit.errors import BadUserInput

    email = (email or "").strip().lower()
    if len(email) > 320 or not EMAIL_RE.match(email) or single_line_problem(email):
        raise BadUserInput(
            f"{field}: is not a valid email address",
            details={field: "is not a valid email address"},
        )
    return email
