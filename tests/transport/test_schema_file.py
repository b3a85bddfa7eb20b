"""schema.graphql and the migrations are generated from the code; drift fails."""

from __future__ import annotations

from pathlib import Path

from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLObjectType

from schema.build import build_schema, export_sdl
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_matches_code():
    current = (ROOT / "schema.graphql").read_text()
    assert current == export_sdl(make_settings()), (
        "schema.graphql is out of date: run `./dev export-schema` and commit it"
    )


def test_every_type_and_field_has_a_description():
    schema = build_schema(make_settings())._schema
    missing = []
    for name, gtype in schema.type_map.items():
        if name.startswith("__") or name in {"String", "Int", "Float", "Boolean", "ID"}:
            continue
        if not gtype.description:
            missing.append(name)
        if isinstance(gtype, (GraphQLObjectType, GraphQLInputObjectType)):
            for fname, field in gtype.fields.items():
                if not field.description:
                    missing.append(f"{name}.{fname}")
        if isinstance(gtype, GraphQLEnumType):
            pass
    assert not missing, f"undocumented: {missing}"
