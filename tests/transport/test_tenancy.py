"""Tenancy sweep: every Query and Mutation field that takes an ID — directly or inside an
input object, at any depth — is called by the owner of one organization with the id of
an object of ANOTHER organization. The answer must be NOT_FOUND (the Relay `node` lookup
may answer null instead, as Relay defines it; a batch mutation may answer NOT_FOUND for
the item in its payload), carry none of the other tenant's data, and change nothing
stored for it.

The fields are read from the schema itself, so fields added later are swept without
anyone listing them. Objects come from `tests/factories.py` (`FACTORIES`: GraphQL type
name → coroutine creating one in a tenant); a field taking an id of a type without a
factory fails this test, naming the type. Which type an ID argument expects is inferred
from its name (`memberId` → Member, `endpointId` → WebhookEndpoint) or from its input
type (`RevokeApiKeyInput.id` → ApiKey); when it cannot be, every registered type's
foreign id is tried and each must be NOT_FOUND.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    Undefined,
    get_named_type,
)
from strawberry import relay
from tortoise import Tortoise

from schema.build import build_schema
from tests.conftest import STRONG_PASSWORD, Account, gql, register
from tests.factories import FACTORIES, INPUT_DEFAULTS, NOT_AN_OBJECT_ID

Path = tuple[str, ...]


# Reading the schema ------------------------------------------------------------------


def unwrap(t: Any) -> Any:
    while isinstance(t, GraphQLNonNull | GraphQLList):
        t = t.of_type
    return t


def id_paths(t: Any, path: Path, seen: frozenset[str] = frozenset()) -> Iterator[Path]:
    """Every path under an argument that ends in an ID (lists included)."""
    named = unwrap(t)
    if named is GraphQLID:
        yield path
    elif isinstance(named, GraphQLInputObjectType) and named.name not in seen:
        for name, f in named.fields.items():
            yield from id_paths(f.type, (*path, name), seen | {named.name})


def node_types(schema: GraphQLSchema) -> list[str]:
    return sorted(
        name
        for name, t in schema.type_map.items()
        if isinstance(t, GraphQLObjectType) and any(i.name == "Node" for i in t.interfaces)
    )


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def expected_type(
    schema: GraphQLSchema, field_name: str, field: GraphQLField, path: Path
) -> str | None:
    """Which Node type an ID at `path` names, when its name, its input type or the field
    (`conversation(id:)`, `deleteContact(id:)`) says so."""
    nodes = node_types(schema)
    leaf = re.sub(r"Ids?$", "", path[-1])
    if leaf and leaf != path[-1]:
        stem = pascal(leaf)
        matches = [n for n in nodes if n == stem] or [n for n in nodes if n.endswith(stem)]
        if len(matches) == 1:
            return matches[0]
    # `id` inside an input: the input's name names the type (RevokeApiKeyInput → ApiKey).
    if len(path) >= 2 and path[-1] in ("id", "ids"):
        holder: Any = field.args[path[0]].type
        for step in path[1:-1]:
            holder = unwrap(holder).fields[step].type
        holder_name = unwrap(holder).name
        contained = [n for n in nodes if n in holder_name]
        if contained:
            return max(contained, key=len)
    if path == ("id",):
        for stem in (pascal(field_name), re.sub(r"^[a-z]+", "", field_name)):
            if stem in nodes:
                return stem
    return None


@dataclass
class Target:
    root: str  # Query or Mutation
    name: str
    field: GraphQLField
    path: Path
    type_name: str | None

    @property
    def label(self) -> str:
        return f"{self.root}.{self.name}({'.'.join(self.path)})"


def targets(schema: GraphQLSchema) -> list[Target]:
    found = []
    for root in (schema.query_type, schema.mutation_type):
        if root is None:
            continue
        for name, f in root.fields.items():
            for arg_name, arg in f.args.items():
                for path in id_paths(arg.type, (arg_name,)):
                    found.append(
                        Target(root.name, name, f, path, expected_type(schema, name, f, path))
                    )
    return found


# Building a call ---------------------------------------------------------------------


@dataclass
class Caller:
    account: Account
    own_ids: dict[str, str] = field(default_factory=dict)


def plausible_string(name: str, caller: Caller) -> str:
    lowered = name.lower()
    if "email" in lowered:
        return caller.account.email
    if "password" in lowered:
        return STRONG_PASSWORD
    if "url" in lowered:
        return "https://hooks.example.com/tenancy"
    if "phone" in lowered:
        return "+15555550100"
    return "tenancy sweep"


def scalar_value(t: GraphQLScalarType, name: str, caller: Caller) -> Any:
    values: dict[str, Any] = {
        "String": plausible_string(name, caller),
        "Int": 1,
        "Float": 1.0,
        "Boolean": False,
        "DateTime": dt.datetime.now(dt.UTC).isoformat(),
        "Date": dt.date.today().isoformat(),
        "Decimal": "1",
        "JSON": {},
    }
    if t.name not in values:
        raise AssertionError(f"tests/transport/test_tenancy.py: teach scalar_value about {t.name}")
    return values[t.name]


def build_value(
    t: GraphQLInputType, name: str, path: Path, target: Path, ids: dict[Path, str], caller: Caller
) -> Any:
    if isinstance(t, GraphQLNonNull):
        return build_value(t.of_type, name, path, target, ids, caller)
    if isinstance(t, GraphQLList):
        return [build_value(t.of_type, name, path, target, ids, caller)]
    if t is GraphQLID:
        return ids[path]
    if isinstance(t, GraphQLEnumType):
        return next(iter(t.values))
    if isinstance(t, GraphQLScalarType):
        return scalar_value(t, name, caller)
    assert isinstance(t, GraphQLInputObjectType)
    out: dict[str, Any] = dict(INPUT_DEFAULTS.get(t.name, {}))
    for fname, f in t.fields.items():
        sub = (*path, fname)
        required = isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined
        if required or target[: len(sub)] == sub:
            out[fname] = build_value(f.type, fname, sub, target, ids, caller)
    return out


def select(t: Any, depth: int) -> str:
    """Every argument-free field down to `depth`: batch payloads answer NOT_FOUND per
    item, and whatever comes back is searched for the other tenant's data."""
    if isinstance(t, GraphQLScalarType | GraphQLEnumType):
        return ""
    if not isinstance(t, GraphQLObjectType) or depth == 0:
        return "{ __typename }"
    parts = ["__typename"]
    for name, f in t.fields.items():
        if any(isinstance(a.type, GraphQLNonNull) for a in f.args.values()):
            continue
        inner = get_named_type(f.type)
        if isinstance(inner, GraphQLScalarType | GraphQLEnumType):
            parts.append(name)
        elif depth > 1 and isinstance(inner, GraphQLObjectType):
            parts.append(f"{name} {select(inner, depth - 1)}")
    return "{ " + " ".join(parts) + " }"


def type_ref(t: Any) -> str:
    return str(t)


def operation(target: Target, ids: dict[Path, str], caller: Caller) -> tuple[str, dict]:
    variables: dict[str, Any] = {}
    declared, passed = [], []
    for arg_name, arg in target.field.args.items():
        required = isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined
        if not required and target.path[0] != arg_name:
            continue
        variables[arg_name] = build_value(arg.type, arg_name, (arg_name,), target.path, ids, caller)
        declared.append(f"${arg_name}: {type_ref(arg.type)}")
        passed.append(f"{arg_name}: ${arg_name}")
    selection = select(get_named_type(target.field.type), depth=3)
    kind = "query" if target.root == "Query" else "mutation"
    decl = f"({', '.join(declared)})" if declared else ""
    call = f"({', '.join(passed)})" if passed else ""
    return f"{kind} {decl} {{ {target.name}{call} {selection} }}", variables


# The store of the other tenant ---------------------------------------------------------


async def tenant_rows(tenant_id: int) -> dict[str, list[dict]]:
    rows = {}
    for name, model in sorted(Tortoise.apps["switchboard"].items()):
        if "tenant_id" in model._meta.fields_map:
            values = await model.filter(tenant_id=tenant_id).order_by("id").values()
            rows[name] = json.loads(json.dumps(values, default=str))
        elif name == "Tenant":
            values = await model.filter(id=tenant_id).values()
            rows[name] = json.loads(json.dumps(values, default=str))
    return rows


def db_id(global_id: str) -> int:
    return int(relay.GlobalID.from_id(global_id).node_id)


# The sweep ---------------------------------------------------------------------------


async def test_foreign_ids_are_not_found_everywhere(client: httpx.AsyncClient, settings):
    schema = build_schema(settings)._schema
    found = targets(schema)
    assert any(t.name == "switchTenant" for t in found), "the sweep found no ID arguments"

    problems: list[str] = []
    for t in found:
        if t.type_name and t.type_name not in FACTORIES and t.label not in NOT_AN_OBJECT_ID:
            problems.append(
                f"{t.label} takes an id of {t.type_name}, but tests/factories.py has no "
                f'factory for it: add `@factory("{t.type_name}")` (see its docstring).'
            )

    marker = uuid.uuid4().hex[:10]
    victim = await register(client, org=f"Victim {marker}")
    caller = Caller(await register(client, org=f"Caller {marker}"))
    foreign: dict[str, str] = {}
    for type_name, make in sorted(FACTORIES.items()):
        foreign[type_name] = await make(client, victim)
        # The id is real: its owner reaches it.
        seen = await gql(
            client,
            "query($id: ID!) { node(id: $id) { __typename } }",
            {"id": foreign[type_name]},
            token=victim.token,
        )
        assert seen.get("data", {}).get("node") == {"__typename": type_name}, (type_name, seen)
    victim_tenant = db_id(victim.org_id)
    before = await tenant_rows(victim_tenant)
    secrets = [victim.email, f"Victim {marker}"]

    for t in found:
        if t.label in NOT_AN_OBJECT_ID:
            continue
        candidates = [t.type_name] if t.type_name else sorted(FACTORIES)
        for type_name in candidates:
            if type_name not in FACTORIES:
                continue
            ids: dict[Path, str] = {}
            for other in found:
                if other.root == t.root and other.name == t.name:
                    ids[other.path] = await own_id(client, caller, other.type_name, foreign)
            ids[t.path] = foreign[type_name]
            query, variables = operation(t, ids, caller)
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"authorization": f"Bearer {caller.account.token}"},
            )
            problem = judge(t, type_name, response, secrets)
            if problem:
                problems.append(problem)

    after = await tenant_rows(victim_tenant)
    if after != before:
        changed = sorted(k for k in before if before[k] != after.get(k))
        problems.append(f"the other tenant's stored rows changed: {changed}")
    assert not problems, "Tenancy sweep:\n  " + "\n  ".join(problems)


async def own_id(
    client: httpx.AsyncClient, caller: Caller, type_name: str | None, foreign: dict[str, str]
) -> str:
    """An id from the caller's own tenant for the other ID arguments of a call."""
    if type_name is None or type_name not in FACTORIES:
        return next(iter(foreign.values()))
    if type_name not in caller.own_ids:
        caller.own_ids[type_name] = await FACTORIES[type_name](client, caller.account)
    return caller.own_ids[type_name]


def judge(t: Target, type_name: str, response: httpx.Response, secrets: list[str]) -> str | None:
    where = f"{t.label} with another tenant's {type_name}"
    try:
        body = response.json()
    except ValueError:
        return f"{where}: HTTP {response.status_code}, not JSON: {response.text[:200]}"
    for secret in secrets:
        if secret in response.text:
            return f"{where}: the answer contains the other tenant's data ({secret!r})"
    data = body.get("data")
    value = None if data is None else data.get(t.name)
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
    if value is not None:
        if '"NOT_FOUND"' in json.dumps(value) and not codes:
            return None  # a batch answering NOT_FOUND for the item
        return f"{where}: answered data {value!r} (errors {codes})"
    if codes == ["NOT_FOUND"]:
        return None
    if t.root == "Query" and t.name == "node" and not codes:
        return None  # Relay: an unknown id is null
    return f"{where}: expected NOT_FOUND, got {codes or 'no error'}: {body.get('errors')}"
