"""Bad values inside well-formed requests: NUL characters and unpaired surrogates in any
string, cursors and global ids of the wrong shape, a subscription over POST, CR/LF aimed
at mail headers. Each is a coded 4xx; nothing is stored half."""

from __future__ import annotations

import base64
import json

import pytest
from strawberry import relay

from tests.conftest import error_codes, gql
from tests.factories import make_contact, store_counts

CREATE = """mutation($i: CreateContactInput!) { createContact(input: $i) { contact { id } } }"""
UPSERT = """mutation($i: UpsertContactsInput!) {
  upsertContacts(input: $i) { results { index outcome } } }"""
LIST = """query($after: String, $f: ContactFilter) {
  contacts(first: 5, after: $after, filter: $f) { edges { node { id } } } }"""

BAD_TEXTS = ["nul\x00inside", "\x00", "lone \ud800 high", "lone \udfff low", "\udc00\ud800"]


def raw_body(query: str, variables: dict) -> bytes:
    # json.dumps writes lone surrogates as \\udXXX escapes, as a browser's JSON would.
    return json.dumps({"query": query, "variables": variables}).encode()


async def post(client, body: bytes, token: str):
    response = await client.post(
        "/graphql",
        content=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    return response.status_code, response.json()


@pytest.mark.parametrize("text", BAD_TEXTS)
async def test_bad_text_in_variables_is_bad_user_input(client, owner, text):
    before = await store_counts()
    status, body = await post(client, raw_body(CREATE, {"i": {"name": text}}), owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert status == 200 and body.get("data") is None
    assert await store_counts() == before


@pytest.mark.parametrize("text", BAD_TEXTS)
async def test_bad_text_in_a_filter_is_bad_user_input(client, owner, text):
    _status, body = await post(client, raw_body(LIST, {"f": {"search": text}}), owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"], body


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\udfff"])
async def test_bad_text_in_a_literal_is_refused(client, owner, escape):
    before = await store_counts()
    query = 'mutation { createContact(input: {name: "a' + escape + 'b"}) { contact { id } } }'
    body = await gql(client, query, token=owner.token)
    # GraphQL's own escapes: a lone surrogate fails to parse, a NUL fails validation.
    codes = error_codes(body)
    assert codes in (["GRAPHQL_VALIDATION_FAILED"], ["GRAPHQL_PARSE_FAILED"]), body
    assert await store_counts() == before


async def test_one_bad_item_in_an_upsert_batch_stores_nothing(client, owner):
    items = [{"externalId": f"e{i}", "name": f"Name {i}"} for i in range(5)]
    items[3]["name"] = "bad\x00name"
    before = await store_counts()
    _status, body = await post(client, raw_body(UPSERT, {"i": {"items": items}}), owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert await store_counts() == before


async def test_good_text_with_escapes_still_works(client, owner):
    name = "Zoë 😀 \\u0000 literally"  # a backslash, not a NUL; an astral character
    _status, body = await post(client, raw_body(CREATE, {"i": {"name": name}}), owner.token)
    assert "errors" not in body, body


def cursor_of(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "after",
    [
        [1, 2],
        {"a": 1},
        7,
        True,
        "not base64 !!",
        cursor_of([[1, 2], 1]),
        cursor_of([{"x": 1}, 1]),
        cursor_of([{"t": "dt", "v": "yesterday"}, 1]),
        cursor_of([{"t": "dec", "v": "1"}, 1]),
        cursor_of(["2024-01-01", 1]),
        cursor_of(["x", 10**30]),
        cursor_of([{"t": "dt", "v": "2024-01-01T00:00:00+00:00"}, -5]),
        cursor_of([{"t": "dt", "v": "2024-01-01T00:00:00+00:00"}, "1"]),
        cursor_of("scalar"),
        cursor_of([1, 2, 3]),
        cursor_of(["\x00", 1]),
    ],
)
async def test_bad_cursors_are_bad_user_input(client, owner, after):
    await make_contact(client, owner)
    body = await gql(client, LIST, {"after": after}, token=owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"], body


async def test_a_null_cursor_is_the_first_page(client, owner):
    await make_contact(client, owner)
    body = await gql(client, LIST, {"after": None}, token=owner.token)
    assert "errors" not in body, body
    assert len(body["data"]["contacts"]["edges"]) == 1


NODE = "query($id: ID!) { node(id: $id) { id } }"


@pytest.mark.parametrize(
    "gid",
    [
        str(relay.GlobalID("Contact", str(10**30))),
        str(relay.GlobalID("Contact", "-1")),
        str(relay.GlobalID("Contact", "1e3")),
        str(relay.GlobalID("Contact", "")),
        str(relay.GlobalID("NoSuchType", "1")),
        str(relay.GlobalID("PageInfo", "1")),
        str(relay.GlobalID("Query", "1")),
        base64.b64encode(b"Contact").decode(),
        "%%%",
        "",
    ],
)
async def test_bad_global_ids_are_not_found(client, owner, gid):
    # Whatever an id names (nothing, no node type, a number no store holds), `node` answers
    # as for a missing row: null; an id that is not a global id at all is BAD_USER_INPUT.
    await make_contact(client, owner)
    body = await gql(client, NODE, {"id": gid}, token=owner.token)
    if "errors" in body:
        assert error_codes(body) == ["BAD_USER_INPUT"], body
    else:
        assert body["data"] == {"node": None}, body


async def test_a_huge_id_inside_an_input_is_not_found(client, owner):
    gid = str(relay.GlobalID("Contact", str(10**30)))
    body = await gql(
        client,
        """mutation($i: UpdateContactInput!) { updateContact(input: $i) { contact { id } } }""",
        {"i": {"id": gid, "name": "x"}},
        token=owner.token,
    )
    assert error_codes(body) == ["NOT_FOUND"], body


async def test_a_subscription_over_post_is_refused(client, owner):
    for accept in ("application/json", "application/graphql-response+json"):
        response = await client.post(
            "/graphql",
            json={"query": "subscription { heartbeat(intervalSeconds: 1) { sequence } }"},
            headers={"authorization": f"Bearer {owner.token}", "accept": accept},
        )
        assert 400 <= response.status_code < 500, response.text
        [error] = response.json()["errors"]
        assert error["extensions"]["code"], error


async def test_cr_lf_never_reaches_a_mail_header(client, owner):
    from models.mail import OutboundEmail

    body = await gql(
        client,
        """mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitation { id } } }""",
        {"i": {"email": "new-member@example.com", "role": "SUPPORT"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    renamed = await gql(
        client,
        """mutation($i: UpdateOrganizationInput!) { updateOrganization(input: $i) { name } }""",
        {"i": {"name": "Acme\r\nBcc: victim@example.com"}},
        token=owner.token,
    )
    assert error_codes(renamed) == ["BAD_USER_INPUT"], renamed
    profile = await gql(
        client,
        """mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { name } }""",
        {"i": {"name": "Eve\nBcc: x@example.com"}},
        token=owner.token,
    )
    assert error_codes(profile) == ["BAD_USER_INPUT"], profile
    for mail in await OutboundEmail.all():
        assert "\r" not in mail.subject and "\n" not in mail.subject
