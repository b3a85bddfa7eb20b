"""A bounded GraphQL fuzz run: schemathesis generates operations from `schema.graphql` (every
Query and Mutation field, arguments valid and not) and sends them to a real `serve`
process, anonymous and as an owner. No answer may be a server error: a 5xx, or an
`INTERNAL_SERVER_ERROR` in `errors`.

Hypothesis is derandomised and limited per operation, so the run is the same each time
and stays under a minute.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from graphql import (
    BooleanValueNode,
    IntValueNode,
    NameNode,
    NullValueNode,
    ObjectFieldNode,
    ObjectValueNode,
    StringValueNode,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


def _json_values() -> st.SearchStrategy:
    """Literals for the JSON scalar: strings, numbers, booleans, null, flat objects."""
    leaf = st.one_of(
        st.text(max_size=20).map(lambda v: StringValueNode(value=v)),
        st.integers(-(10**6), 10**6).map(lambda v: IntValueNode(value=str(v))),
        st.booleans().map(lambda v: BooleanValueNode(value=v)),
        st.just(NullValueNode()),
    )
    field = st.tuples(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True), leaf).map(
        lambda kv: ObjectFieldNode(name=NameNode(value=kv[0]), value=kv[1])
    )
    return st.one_of(leaf, st.lists(field, max_size=4).map(lambda fs: ObjectValueNode(fields=fs)))


schemathesis.graphql.scalar("JSON", _json_values())
# Decimal inputs (money): decimal strings of any size and precision, and strings that are
# not numbers at all (`NaN`, `1e999`, junk).
schemathesis.graphql.scalar(
    "Decimal",
    st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.sampled_from(["NaN", "Infinity", "-0", "1e999", "1" * 60, "0.0000001"]),
        st.text(max_size=20),
    ).map(lambda v: StringValueNode(value=v)),
)
# A JSON request cannot carry a file: whatever it puts where an Upload goes is refused.
schemathesis.graphql.scalar("Upload", st.text(max_size=20).map(lambda v: StringValueNode(value=v)))
SCHEMA = schemathesis.graphql.from_path(ROOT / "schema.graphql")
EXAMPLES_PER_OPERATION = 10
PASSWORD = "correct horse battery staple"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`serve` in a process of its own (development mode: migrations applied), and an
    owner's token."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("fuzz")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "DATABASE_URL": f"sqlite://{folder}/fuzz.sqlite3",
        "STORAGE_URL": f"file://{folder}/storage",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ANONYMOUS": "100000/hour",
        "RATE_LIMIT_AUTHENTICATED": "100000/hour",
        "LOGIN_ATTEMPTS_PER_ADDRESS": "100000/hour",
        "LOGIN_ATTEMPTS_PER_ACCOUNT": "100000/hour",
        "GC_FREEZE": "false",
    }
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], cwd=folder, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("serve did not start: " + (folder / "serve.log").read_text()[-2000:])
            time.sleep(0.2)
        registered = httpx.post(
            f"{url}/graphql",
            json={
                "query": "mutation($i: RegisterOrganizationInput!) {"
                " registerOrganization(input: $i) { accessToken } }",
                "variables": {
                    "i": {
                        "organizationName": "Fuzz",
                        "email": "fuzz-owner@example.com",
                        "password": PASSWORD,
                        "name": "Fuzz",
                    }
                },
            },
        ).json()
        token = registered["data"]["registerOrganization"]["accessToken"]
        yield {"url": url, "token": token, "log": str(folder / "serve.log")}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _server_errors(response: object) -> list[str]:
    status = response.status_code  # type: ignore[attr-defined]
    if status >= 500:
        return [f"HTTP {status}: {response.text[:500]}"]  # type: ignore[attr-defined]
    try:
        body = response.json()  # type: ignore[attr-defined]
    except ValueError:
        return [f"not JSON: {response.text[:200]}"]  # type: ignore[attr-defined]
    return [
        str(error)
        for error in (body.get("errors") or [] if isinstance(body, dict) else [])
        if (error.get("extensions") or {}).get("code") == "INTERNAL_SERVER_ERROR"
    ]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("caller", ["anonymous", "owner"])
@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, gateway, caller):
    headers = {"Authorization": f"Bearer {gateway['token']}"} if caller == "owner" else {}
    response = case.call(base_url=f"{gateway['url']}/graphql", headers=headers)
    problems = _server_errors(response)
    assert not problems, (case.body, problems)
