"""API keys: created once with a secret, used as bearer tokens, listed without secrets, revoked."""

from __future__ import annotations

import json

from models.apikeys import ApiKey
from tests.conftest import error_codes, gql, register
from tests.members.test_members import (
    CHANGE_ROLE,
    INVITE,
    MEMBERS,
    REMOVE,
    join,
    member_id,
    new_email,
)

CREATE = """mutation($i: CreateApiKeyInput!) {
  createApiKey(input: $i) { secret apiKey { id name role prefix createdAt lastUsedAt revokedAt
    createdBy { email } } } }"""
LIST = """query($rev: Boolean) { apiKeys(includeRevoked: $rev) {
  totalCount edges { node { id name role prefix createdAt lastUsedAt revokedAt } } } }"""
REVOKE = "mutation($i: RevokeApiKeyInput!) { revokeApiKey(input: $i) { apiKey { id revokedAt } } }"
ME = "{ me { role isApiKey organization { id } } }"


async def create_key(client, token: str, role: str = "SUPPORT", name: str = "ci") -> dict:
    body = await gql(client, CREATE, {"i": {"name": name, "role": role}}, token=token)
    assert "errors" not in body, body
    return body["data"]["createApiKey"]


async def test_create_use_and_revoke(client, owner):
    created = await create_key(client, owner.token, "MANAGER", "deploy bot")
    secret = created["secret"]
    key = created["apiKey"]
    assert secret.startswith("sbk_") and len(secret) > 40
    assert key["prefix"] == secret[:12]
    assert key["role"] == "MANAGER" and key["name"] == "deploy bot"
    assert key["lastUsedAt"] is None and key["revokedAt"] is None
    assert key["createdBy"]["email"] == owner.email
    # Only a hash is stored.
    row = await ApiKey.get(prefix=key["prefix"])
    assert row.key_hash != secret and secret not in row.key_hash

    me = await gql(client, ME, token=secret)
    assert me["data"]["me"] == {
        "role": "MANAGER",
        "isApiKey": True,
        "organization": {"id": owner.org_id},
    }
    listing = await gql(client, LIST, token=owner.token)
    node = listing["data"]["apiKeys"]["edges"][0]["node"]
    assert node["id"] == key["id"] and node["lastUsedAt"] is not None

    revoked = await gql(client, REVOKE, {"i": {"id": key["id"]}}, token=owner.token)
    assert revoked["data"]["revokeApiKey"]["apiKey"]["revokedAt"]
    refused = await gql(client, ME, token=secret)
    assert error_codes(refused) == ["UNAUTHENTICATED"]
    # Revoked keys are listed unless asked not to be.
    everything = await gql(client, LIST, token=owner.token)
    assert everything["data"]["apiKeys"]["totalCount"] == 1
    active = await gql(client, LIST, {"rev": False}, token=owner.token)
    assert active["data"]["apiKeys"]["edges"] == []


async def test_secret_never_appears_again(client, owner):
    created = await create_key(client, owner.token)
    secret = created["secret"]
    # Use it, list it, fetch it as a node, revoke it: the secret and its hash stay out.
    await gql(client, ME, token=secret)
    row = await ApiKey.get(prefix=created["apiKey"]["prefix"])
    answers = [
        await gql(client, LIST, token=owner.token),
        await gql(
            client,
            "query($id: ID!) { node(id: $id) { ... on ApiKey { id name prefix } } }",
            {"id": created["apiKey"]["id"]},
            token=owner.token,
        ),
        await gql(client, REVOKE, {"i": {"id": created["apiKey"]["id"]}}, token=owner.token),
        await gql(client, LIST, token=owner.token),
    ]
    for answer in answers:
        assert "errors" not in answer, answer
        text = json.dumps(answer)
        assert secret not in text
        assert row.key_hash not in text
    assert answers[1]["data"]["node"]["prefix"] == secret[:12]


async def test_role_ceiling_for_keys(client, owner):
    manager, _ = await join(client, owner, "MANAGER")
    denied = await gql(client, CREATE, {"i": {"name": "x", "role": "OWNER"}}, token=manager.token)
    assert error_codes(denied) == ["FORBIDDEN"]
    ok = await create_key(client, manager.token, "READ_ONLY")
    assert ok["apiKey"]["role"] == "READ_ONLY"
    support, _ = await join(client, owner, "SUPPORT")
    nope = await gql(client, CREATE, {"i": {"name": "x", "role": "SUPPORT"}}, token=support.token)
    assert error_codes(nope) == ["FORBIDDEN"]
    # A manager cannot revoke an owner's key either.
    owner_key = await create_key(client, owner.token, "OWNER")
    revoke = await gql(
        client, REVOKE, {"i": {"id": owner_key["apiKey"]["id"]}}, token=manager.token
    )
    assert error_codes(revoke) == ["FORBIDDEN"]
    bad_name = await gql(
        client, CREATE, {"i": {"name": "  ", "role": "SUPPORT"}}, token=owner.token
    )
    assert error_codes(bad_name) == ["BAD_USER_INPUT"]
    assert bad_name["errors"][0]["extensions"]["details"] == {"name": "must be 1 to 120 characters"}


async def test_api_key_principal_stays_within_its_role(client, owner):
    manager_key = (await create_key(client, owner.token, "MANAGER"))["secret"]
    stronger = await gql(client, CREATE, {"i": {"name": "x", "role": "OWNER"}}, token=manager_key)
    assert error_codes(stronger) == ["FORBIDDEN"]
    weaker = await gql(client, CREATE, {"i": {"name": "x", "role": "SUPPORT"}}, token=manager_key)
    assert "errors" not in weaker, weaker
    invite_owner = await gql(
        client, INVITE, {"i": {"email": new_email(), "role": "OWNER"}}, token=manager_key
    )
    assert error_codes(invite_owner) == ["FORBIDDEN"]
    me_id = await member_id(client, owner, owner.email)
    manage = await gql(client, REMOVE, {"i": {"memberId": me_id}}, token=manager_key)
    assert error_codes(manage) == ["FORBIDDEN"]
    read_key = (await create_key(client, owner.token, "READ_ONLY"))["secret"]
    listing = await gql(client, LIST, token=read_key)
    assert error_codes(listing) == ["FORBIDDEN"]
    members = await gql(client, MEMBERS, token=read_key)
    assert members["data"]["members"]["totalCount"] == 1
    leave = await gql(client, "mutation { leaveOrganization { ok } }", token=read_key)
    assert error_codes(leave) == ["FORBIDDEN"]


async def test_keys_of_removed_or_demoted_members_stop(client, owner):
    manager, _ = await join(client, owner, "MANAGER")
    manager_key = (await create_key(client, manager.token, "MANAGER"))["secret"]
    support_key = (await create_key(client, manager.token, "SUPPORT"))["secret"]
    mid = await member_id(client, owner, manager.email)
    demoted = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": mid, "role": "SUPPORT"}}, token=owner.token
    )
    assert "errors" not in demoted, demoted
    # A key never holds more than its creator: the MANAGER key is capped at SUPPORT.
    assert (await gql(client, ME, token=manager_key))["data"]["me"]["role"] == "SUPPORT"
    assert (await gql(client, ME, token=support_key))["data"]["me"]["role"] == "SUPPORT"
    await gql(client, REMOVE, {"i": {"memberId": mid}}, token=owner.token)
    assert error_codes(await gql(client, ME, token=support_key)) == ["UNAUTHENTICATED"]


async def test_foreign_key_is_not_found(client, owner):
    key = await create_key(client, owner.token)
    other, _ = await join(client, owner, "MANAGER")  # same tenant: allowed
    stranger = await register(client, org="Stranger")
    foreign = await gql(client, REVOKE, {"i": {"id": key["apiKey"]["id"]}}, token=stranger.token)
    assert error_codes(foreign) == ["NOT_FOUND"]
    theirs = await gql(client, LIST, token=stranger.token)
    assert theirs["data"]["apiKeys"]["edges"] == []
    mine = await gql(client, LIST, token=other.token)
    assert mine["data"]["apiKeys"]["totalCount"] == 1
    wrong_type = await gql(client, REVOKE, {"i": {"id": owner.org_id}}, token=owner.token)
    assert error_codes(wrong_type) == ["NOT_FOUND"]
