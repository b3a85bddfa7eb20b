"""GraphQL operation metrics: count and time each operation by name, type and outcome.

Operation names come from clients, so label values are guarded: only valid
GraphQL names are used, at most `MAX_NAMES` distinct ones per process; the rest
count as `other`. Anonymous operations count as `anonymous`.
"""

from __future__ import annotations

import re
import time
from typing import Any

from strawberry.types import ExecutionContext

from kit import metrics

MAX_NAMES = 300
_NAME_RE = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,63}$")
_seen: set[str] = set()


def _label(name: str | None) -> str:
    if not name:
        return "anonymous"
    if name in _seen:
        return name
    if not _NAME_RE.match(name) or len(_seen) >= MAX_NAMES:
        return "other"
    _seen.add(name)
    return name


def record_operation(ctx: ExecutionContext, started: float) -> None:
    """Count and time one finished operation by name, type and outcome."""
    try:
        kind = ctx.operation_type.value
        name = _label(ctx.operation_name)
    except Exception:  # unparsable document or unknown operation name
        kind, name = "unknown", "invalid"
    result = ctx.result
    errors = getattr(result, "errors", None) if result is not None else None
    errors = errors or ctx.pre_execution_errors  # parse and validation failures
    if not errors:
        outcome = "ok"
    elif getattr(result, "data", None) is None:
        outcome = "error"
    else:
        outcome = "partial"
    _observe(name, kind, outcome, time.perf_counter() - started)


def record_cached_operation(operation_name: str | None, seconds: float) -> None:
    """A query answered from the response cache: an ok operation, and a cache hit."""
    name = _label(operation_name)
    _observe(name, "query", "ok", seconds)
    hits = _hit_children.get(name)
    if hits is None:
        hits = _hit_children[name] = metrics.graphql_response_cache_hits.labels(name)
    hits.inc()


_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_hit_children: dict[str, Any] = {}


def _observe(name: str, kind: str, outcome: str, seconds: float) -> None:
    """Count and time one operation (label children cached per combination: `.labels()`
    costs more than the increment)."""
    key = (name, kind, outcome)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (
            metrics.graphql_operations.labels(name, kind, outcome),
            metrics.graphql_latency.labels(name, kind),
        )
    children[0].inc()
    children[1].observe(seconds)
