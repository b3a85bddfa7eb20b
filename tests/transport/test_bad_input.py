"""Bad input over real HTTP: a coded error with the request id, the process goes on,
and nothing stored changes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import STRONG_PASSWORD, error_codes, gql
from tests.factories import app_with, client_for, store_counts

GRAPHQL_RESPONSE = "application/graphql-response+json"
REGISTER = """mutation($i: RegisterOrganizationInput!) {
  registerOrganization(input: $i) { accessToken } }"""


def register_vars(email: str = "bad-input@example.com") -> dict:
    return {
        "i": {"organizationName": "Bad", "email": email, "password": STRONG_PASSWORD, "name": "B"}
    }


def assert_coded(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert "data" not in body or body["data"] is None, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == code, body
    request_id = response.headers["x-request-id"]
    assert error["extensions"]["requestId"] == request_id
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"query": "mutation {', "truncated JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[" * 200_000 + b"]" * 200_000, "absurdly nested JSON"),
        (b'"just a string"', "a string, not an object"),
        (b"42", "a number"),
        (b"null", "null"),
        (b"[]", "a batch, and batching is off"),
        (b"{}", "no query"),
        (b'{"query": 42}', "query is not a string"),
        (b'{"query": "{ me { role } }", "variables": "x"}', "variables not an object"),
    ],
)
@pytest.mark.usefixtures("unchanged")
async def test_malformed_body_is_coded_400(client, content, why):
    for accept in ("application/json", GRAPHQL_RESPONSE):
        response = await client.post(
            "/graphql",
            content=content,
            headers={"content-type": "application/json", "accept": accept},
        )
        assert_coded(response, 400, "BAD_REQUEST")
        assert response.headers["content-type"].startswith(accept), why


@pytest.mark.usefixtures("unchanged")
async def test_unsupported_content_type(client):
    response = await client.post(
        "/graphql",
        content=json.dumps({"query": "{ serverInfo { version } }"}),
        headers={"content-type": "text/plain"},
    )
    assert_coded(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.usefixtures("unchanged")
async def test_syntax_error_is_parse_failed(client):
    body = await gql(client, "mutation { registerOrganization(input: {")
    assert error_codes(body) == ["GRAPHQL_PARSE_FAILED"]
    assert body["errors"][0]["extensions"]["requestId"]


@pytest.mark.usefixtures("unchanged")
async def test_unknown_field_is_validation_failed(client):
    body = await gql(client, "{ serverInfo { version nope } }")
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "nope" in body["errors"][0]["message"]


@pytest.mark.usefixtures("unchanged")
async def test_unknown_input_field_is_refused(client):
    variables = register_vars()
    variables["i"]["isAdmin"] = True
    body = await gql(client, REGISTER, variables)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "isAdmin" in body["errors"][0]["message"]


@pytest.mark.parametrize(
    "variables",
    [
        {"i": 5},
        {"i": "a string"},
        {"i": {"organizationName": 7, "email": "x@example.com", "password": STRONG_PASSWORD}},
        {"i": {"email": "x@example.com", "password": STRONG_PASSWORD}},  # required field missing
        {"i": None},
        {},
    ],
)
@pytest.mark.usefixtures("unchanged")
async def test_wrong_variable_types_are_bad_user_input(client, variables):
    body = await gql(client, REGISTER, variables)
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert body["_status"] == 200
    assert body.get("data") is None


@pytest.mark.usefixtures("unchanged")
async def test_wrong_literal_type_is_validation_failed(client):
    body = await gql(client, '{ contacts(first: "ten") { totalCount } }')
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_too_deep(client, settings):
    async with client_for(app_with(settings, max_query_depth=2)) as shallow:
        before = await store_counts()
        body = await gql(shallow, "{ me { memberships { organization { name } } } }")
        assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
        assert "depth" in body["errors"][0]["message"]
        assert body["errors"][0]["extensions"]["requestId"]
        assert await store_counts() == before
        ok = await gql(shallow, "{ serverInfo { version } }")
        assert "errors" not in ok


@pytest.mark.usefixtures("unchanged")
async def test_introspection_cannot_nest_without_end(client):
    # The depth limiter skips `__` fields; fields→type→fields… grows exponentially.
    inner = "name"
    for _ in range(6):
        inner = f"fields {{ type {{ {inner} }} }}"
    body = await gql(client, "{ __schema { types { " + inner + " } } }")
    assert set(error_codes(body)) == {"GRAPHQL_VALIDATION_FAILED"}
    assert "introspection" in body["errors"][0]["message"].lower()


@pytest.mark.usefixtures("unchanged")
async def test_ordinary_introspection_still_works(client):
    body = await gql(client, "{ __schema { queryType { fields { name type { name } } } } }")
    assert "errors" not in body, body
    assert "serverInfo" in {f["name"] for f in body["data"]["__schema"]["queryType"]["fields"]}


@pytest.mark.usefixtures("unchanged")
async def test_too_many_tokens(client):
    body = await gql(client, "{ serverInfo { " + "version " * 5000 + "} }")
    [code] = error_codes(body)
    assert code in {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"}
    assert "tokens" in body["errors"][0]["message"]


@pytest.mark.usefixtures("unchanged")
async def test_too_many_aliases(client):
    aliases = " ".join(f"a{i}: serverInfo {{ version }}" for i in range(31))
    body = await gql(client, "{ " + aliases + " }")
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "aliases" in body["errors"][0]["message"].lower()


@pytest.mark.usefixtures("unchanged")
async def test_limits_are_400_under_graphql_response(client):
    aliases = " ".join(f"a{i}: serverInfo {{ version }}" for i in range(31))
    response = await client.post(
        "/graphql", json={"query": "{ " + aliases + " }"}, headers={"accept": GRAPHQL_RESPONSE}
    )
    assert_coded(response, 400, "GRAPHQL_VALIDATION_FAILED")


@pytest.mark.usefixtures("unchanged")
async def test_oversized_body_with_content_length_is_413(client, settings):
    variables = register_vars()
    variables["i"]["name"] = "x" * (settings.max_body_bytes + 10)
    response = await client.post("/graphql", json={"query": REGISTER, "variables": variables})
    error = assert_coded(response, 413, "PAYLOAD_TOO_LARGE")
    assert error["extensions"]["limit"] == settings.max_body_bytes


@pytest.mark.usefixtures("unchanged")
async def test_oversized_chunked_body_without_content_length_is_413(client, settings):
    chunk = b" " * 65536

    async def body():
        yield b'{"query": "' + REGISTER.replace("\n", " ").encode() + b'", "variables": '
        yield json.dumps(register_vars()).encode()
        for _ in range(settings.max_body_bytes // len(chunk) + 2):
            yield chunk
        yield b"}"

    response = await client.post(
        "/graphql", content=body(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_coded(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.usefixtures("unchanged")
async def test_mutation_over_get_is_405(client):
    response = await client.get(
        "/graphql",
        params={"query": REGISTER, "variables": json.dumps(register_vars())},
        headers={"accept": "application/json"},
    )
    assert_coded(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["allow"]


async def test_query_over_get_works(client):
    response = await client.get(
        "/graphql",
        params={"query": "{ serverInfo { environment } }"},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["data"]["serverInfo"]["environment"] == "test"


@pytest.mark.usefixtures("unchanged")
async def test_other_methods_are_405(client):
    response = await client.put("/graphql", json={"query": "{ serverInfo { version } }"})
    assert response.status_code == 405


@pytest.mark.usefixtures("unchanged")
async def test_bad_input_inside_a_valid_mutation_changes_nothing(client):
    variables = register_vars()
    variables["i"]["email"] = "not an email"
    body = await gql(client, REGISTER, variables)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["details"] == {"email": "is not a valid email address"}
