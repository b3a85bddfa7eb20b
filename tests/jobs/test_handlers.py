"""The worker finds every job handler, periodic job and listener from the explicit list in
resolvers/handlers.py, without building the GraphQL schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from gateway.worker import load_handlers
from resolvers import events, jobs
load_handlers()
print(json.dumps({
    "handlers": sorted(jobs.HANDLERS), "periodics": sorted(jobs.PERIODICS),
    "listeners": sorted(events.registered_listeners()),
    "schema_built": any(m == "schema" or m.startswith("schema.") for m in sys.modules),
    "strawberry": any(m.startswith("strawberry") for m in sys.modules),
}))
"""


def registered(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_worker_loads_handlers_without_the_schema():
    found = registered(PROBE)
    assert not found["schema_built"] and not found["strawberry"]
    assert {"webhooks.process_inbox", "webhooks.deliver"} <= set(found["handlers"]), found
    assert "retention" in found["periodics"]
    assert found["listeners"]


def test_the_explicit_list_misses_nothing_the_schema_imports():
    with_schema = PROBE.replace(
        "load_handlers()",
        "from kit.settings import load_settings\n"
        "from schema.build import build_schema\n"
        "build_schema(load_settings())",
    )
    everything = registered(with_schema)
    listed = registered(PROBE)
    for kind in ("handlers", "periodics", "listeners"):
        assert listed[kind] == everything[kind], (kind, everything[kind], listed[kind])
