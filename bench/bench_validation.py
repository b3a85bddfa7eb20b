"""Validation is linear in the document: time to validate a document, and the same kind of
document twice as large, for nested fragments, aliases and wide selections.

Each figure is validate(2n) / validate(n) with every rule the gateway runs (graphql-core's
specified rules, the limits rule of schema/limits.py, the introspection depth rule) and
the cost measure, without the validation cache (the text is new each time in the
gateway's cache; here the cache is not involved at all). Target: ≤ 2.2× for each shape.
The baseline for each shape is the same shape at half the size, run in the same process.

Run: .venv/bin/python bench/bench_validation.py
"""

from __future__ import annotations

import statistics
import time

from _util import ROOT  # noqa: F401  (puts the project on sys.path)
from graphql import parse, specified_rules, validate

from kit.settings import load_settings
from schema.build import build_schema
from schema.limits import operation_figures


def nested_fragments(n: int) -> str:
    """A chain of n fragments, each spreading the next one twice (2^n spreads)."""
    parts = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n)]
    parts.append(f"fragment F{n} on Query {{ serverInfo {{ version }} }}")
    return "query { ...F0 }\n" + "\n".join(parts)


def aliases(n: int) -> str:
    return "{ " + " ".join(f"a{i}: serverInfo {{ version }}" for i in range(n)) + " }"


def wide(n: int) -> str:
    """n distinct selections under one field (each an inline fragment with its own field)."""
    fields = " ".join(f"... on Viewer {{ r{i}: role }}" for i in range(n))
    return "{ me { " + fields + " } }"


def time_validation(schema, text: str, rules, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        document = parse(text)
        validate(schema, document, rules)
        operation_figures(schema, document, None, None)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    settings = load_settings(max_query_tokens=1_000_000)
    gateway_schema = build_schema(settings)
    schema = gateway_schema._schema
    extension = gateway_schema.extensions[0]()
    rules = (*specified_rules, *extension.rules)
    print(f"{'shape':<18}{'n':>6}{'t(n) ms':>10}{'t(2n) ms':>10}{'ratio':>8}  target ≤ 2.2")
    for shape, make, n in (
        ("nested fragments", nested_fragments, 200),
        ("aliases", aliases, 400),
        ("wide", wide, 400),
    ):
        time_validation(schema, make(n), rules, 3)  # warm up
        small = time_validation(schema, make(n), rules, 15)
        large = time_validation(schema, make(2 * n), rules, 15)
        print(f"{shape:<18}{n:>6}{small * 1e3:>10.2f}{large * 1e3:>10.2f}{large / small:>8.2f}")


if __name__ == "__main__":
    main()
