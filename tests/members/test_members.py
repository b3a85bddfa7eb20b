"""Members and invitations: invite, accept (new and existing accounts), roles, removal."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid

from kit.security import hash_token, new_token
from models.mail import OutboundEmail
from models.members import Invitation
from tests.conftest import STRONG_PASSWORD, Account, error_codes, gql, register

INVITE = """mutation($i: InviteMemberInput!) {
  inviteMember(input: $i) { invitation { id email role expiresAt invitedBy { email } } } }"""
ACCEPT = """mutation($i: AcceptInvitationInput!) {
  acceptInvitation(input: $i) {
    accessToken refreshToken role user { id email name emailVerified } organization { id name }
  } }"""
MEMBERS = """query($first: Int, $after: String) { members(first: $first, after: $after) {
  totalCount edges { cursor node { id role joinedAt user { email name } } }
  pageInfo { hasNextPage endCursor } } }"""
INVITATIONS = "{ invitations { totalCount edges { node { id email role } } } }"
CHANGE_ROLE = """mutation($i: ChangeMemberRoleInput!) {
  changeMemberRole(input: $i) { member { id role } } }"""
REMOVE = """mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }"""
LEAVE = "mutation { leaveOrganization { ok } }"
REVOKE_INVITATION = """mutation($i: RevokeInvitationInput!) {
  revokeInvitation(input: $i) { invitation { id revokedAt } } }"""
REFRESH = """mutation($i: RefreshTokenInput!) {
  refreshToken(input: $i) { accessToken refreshToken role } }"""
ME = "{ me { role organization { id } memberships { role organization { id } } } }"


def new_email(tag: str = "m") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def last_token(email: str, kind: str = "invitation") -> str:
    mail = await OutboundEmail.filter(recipient=email, kind=kind).order_by("-id").first()
    assert mail is not None, f"no {kind} mail to {email}"
    # Tokens are urlsafe base64 on a line of their own.
    match = re.search(r"#token=([A-Za-z0-9_-]{40,})$", mail.text, re.MULTILINE)
    assert match, mail.text
    return match.group(1)


async def invite(client, inviter: Account, email: str, role: str = "SUPPORT") -> dict:
    body = await gql(client, INVITE, {"i": {"email": email, "role": role}}, token=inviter.token)
    assert "errors" not in body, body
    return body["data"]["inviteMember"]["invitation"]


async def join(client, owner: Account, role: str = "SUPPORT") -> tuple[Account, dict]:
    """A new user joins `owner`'s organization through an invitation; returns their session."""
    email = new_email()
    await invite(client, owner, email, role)
    body = await gql(
        client,
        ACCEPT,
        {"i": {"token": await last_token(email), "name": "New", "password": STRONG_PASSWORD}},
    )
    assert "errors" not in body, body
    data = body["data"]["acceptInvitation"]
    acct = Account(
        data["accessToken"],
        data["refreshToken"],
        email,
        data["user"]["id"],
        data["organization"]["id"],
    )
    return acct, data


async def member_id(client, owner: Account, email: str) -> str:
    body = await gql(client, MEMBERS, {"first": 100}, token=owner.token)
    for edge in body["data"]["members"]["edges"]:
        if edge["node"]["user"]["email"] == email:
            return edge["node"]["id"]
    raise AssertionError(f"{email} is not a member")


async def test_invitation_flow_creates_account_and_membership(client, owner):
    email = new_email("NewPerson").upper()
    invitation = await invite(client, owner, email, "MANAGER")
    assert invitation["email"] == email.lower()
    assert invitation["invitedBy"]["email"] == owner.email
    pending = await gql(client, INVITATIONS, token=owner.token)
    assert [e["node"]["email"] for e in pending["data"]["invitations"]["edges"]] == [email.lower()]

    mail = await OutboundEmail.filter(recipient=email.lower(), kind="invitation").first()
    assert mail is not None and "Acme" in mail.subject
    token = await last_token(email.lower())
    # The token is stored hashed only.
    assert not await Invitation.filter(token_hash=token).exists()

    body = await gql(
        client, ACCEPT, {"i": {"token": token, "name": "Nina", "password": STRONG_PASSWORD}}
    )
    assert "errors" not in body, body
    data = body["data"]["acceptInvitation"]
    assert data["role"] == "MANAGER"
    assert data["organization"]["id"] == owner.org_id
    assert data["user"] == {
        "id": data["user"]["id"],
        "email": email.lower(),
        "name": "Nina",
        "emailVerified": True,
    }
    me = await gql(client, ME, token=data["accessToken"])
    assert me["data"]["me"]["role"] == "MANAGER"

    listing = await gql(client, MEMBERS, token=owner.token)
    roles = {
        e["node"]["user"]["email"]: e["node"]["role"] for e in listing["data"]["members"]["edges"]
    }
    assert roles == {owner.email: "OWNER", email.lower(): "MANAGER"}
    assert listing["data"]["members"]["totalCount"] == 2
    # Accepted invitations are no longer pending.
    pending = await gql(client, INVITATIONS, token=owner.token)
    assert pending["data"]["invitations"]["edges"] == []
    # Single use.
    again = await gql(
        client, ACCEPT, {"i": {"token": token, "name": "Nina", "password": STRONG_PASSWORD}}
    )
    assert error_codes(again) == ["BAD_USER_INPUT"]
    assert again["errors"][0]["extensions"]["details"] == {"token": "was already used"}


async def test_existing_user_accepts_signed_in_or_with_password(client, owner):
    other = await register(client, org="Other")
    # Signed in as the invited account: no password needed.
    await invite(client, owner, other.email, "READ_ONLY")
    body = await gql(
        client, ACCEPT, {"i": {"token": await last_token(other.email)}}, token=other.token
    )
    assert "errors" not in body, body
    assert body["data"]["acceptInvitation"]["role"] == "READ_ONLY"
    me = await gql(client, ME, token=body["data"]["acceptInvitation"]["accessToken"])
    assert {m["role"] for m in me["data"]["me"]["memberships"]} == {"OWNER", "READ_ONLY"}

    # Not signed in: the account's password is required, and must be right.
    third_owner = await register(client, org="Third")
    await invite(client, third_owner, other.email, "SUPPORT")
    token = await last_token(other.email)
    missing = await gql(client, ACCEPT, {"i": {"token": token}})
    assert error_codes(missing) == ["BAD_USER_INPUT"]
    assert "password" in missing["errors"][0]["extensions"]["details"]
    # Signed in as someone else does not count.
    wrong_user = await gql(client, ACCEPT, {"i": {"token": token}}, token=owner.token)
    assert error_codes(wrong_user) == ["BAD_USER_INPUT"]
    wrong = await gql(client, ACCEPT, {"i": {"token": token, "password": "not the password"}})
    assert error_codes(wrong) == ["UNAUTHENTICATED"]
    ok = await gql(client, ACCEPT, {"i": {"token": token, "password": STRONG_PASSWORD}})
    assert "errors" not in ok, ok
    assert ok["data"]["acceptInvitation"]["organization"]["id"] == third_owner.org_id
    assert ok["data"]["acceptInvitation"]["user"]["id"] == other.user_id


async def test_new_account_needs_a_strong_password(client, owner):
    email = new_email()
    await invite(client, owner, email)
    token = await last_token(email)
    weak = await gql(client, ACCEPT, {"i": {"token": token, "password": "short"}})
    assert error_codes(weak) == ["BAD_USER_INPUT"]
    assert "password" in weak["errors"][0]["extensions"]["details"]
    # Nothing was spent: the token still works with a good password.
    ok = await gql(client, ACCEPT, {"i": {"token": token, "password": STRONG_PASSWORD}})
    assert "errors" not in ok, ok


async def test_already_member_conflicts(client, owner):
    member, _ = await join(client, owner)
    body = await gql(
        client, INVITE, {"i": {"email": member.email, "role": "SUPPORT"}}, token=owner.token
    )
    assert error_codes(body) == ["CONFLICT"]
    other = await register(client, org="Other")
    email = new_email()
    await invite(client, other, email)
    first_token = await last_token(email)
    # Re-inviting replaces the pending invitation: the old token stops working.
    await invite(client, other, email, "READ_ONLY")
    second_token = await last_token(email)
    assert first_token != second_token
    old = await gql(client, ACCEPT, {"i": {"token": first_token, "password": STRONG_PASSWORD}})
    assert error_codes(old) == ["BAD_USER_INPUT"]
    assert old["errors"][0]["extensions"]["details"] == {"token": "was revoked"}
    pending = await gql(client, INVITATIONS, token=other.token)
    assert [e["node"]["role"] for e in pending["data"]["invitations"]["edges"]] == ["READ_ONLY"]
    ok = await gql(client, ACCEPT, {"i": {"token": second_token, "password": STRONG_PASSWORD}})
    assert ok["data"]["acceptInvitation"]["role"] == "READ_ONLY"
    # No invitation can be sent to a member.
    again = await gql(client, INVITE, {"i": {"email": email, "role": "SUPPORT"}}, token=other.token)
    assert error_codes(again) == ["CONFLICT"]


async def test_accepting_while_already_member_conflicts(client, owner):
    email = new_email()
    await invite(client, owner, email)
    token_one = await last_token(email)
    # A second pending invitation for someone who is already a member (written straight to
    # the store: the API refuses to send one) answers CONFLICT and stays unspent.
    ok = await gql(client, ACCEPT, {"i": {"token": token_one, "password": STRONG_PASSWORD}})
    assert "errors" not in ok
    invitation = await Invitation.filter(email=email).first()
    assert invitation is not None
    token_two = new_token()
    await Invitation.create(
        tenant_id=invitation.tenant_id,
        email=email,
        role="SUPPORT",
        token_hash=hash_token(token_two),
        expires_at=invitation.expires_at,
    )
    body = await gql(client, ACCEPT, {"i": {"token": token_two, "password": STRONG_PASSWORD}})
    assert error_codes(body) == ["CONFLICT"]
    # The token was not spent by the refused attempt.
    assert await Invitation.filter(token_hash=hash_token(token_two), accepted_at=None).exists()


async def test_expired_unknown_and_revoked_invitations(client, owner):
    email = new_email()
    invitation = await invite(client, owner, email)
    token = await last_token(email)
    await Invitation.filter(email=email).update(
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    expired = await gql(client, ACCEPT, {"i": {"token": token, "password": STRONG_PASSWORD}})
    assert error_codes(expired) == ["BAD_USER_INPUT"]
    assert expired["errors"][0]["extensions"]["details"] == {"token": "has expired"}
    pending = await gql(client, INVITATIONS, token=owner.token)
    assert pending["data"]["invitations"]["edges"] == []

    unknown = await gql(client, ACCEPT, {"i": {"token": "nope", "password": STRONG_PASSWORD}})
    assert unknown["errors"][0]["extensions"]["details"] == {"token": "is unknown"}

    email2 = new_email()
    invitation = await invite(client, owner, email2)
    revoked = await gql(
        client, REVOKE_INVITATION, {"i": {"id": invitation["id"]}}, token=owner.token
    )
    assert revoked["data"]["revokeInvitation"]["invitation"]["revokedAt"]
    body = await gql(
        client, ACCEPT, {"i": {"token": await last_token(email2), "password": STRONG_PASSWORD}}
    )
    assert body["errors"][0]["extensions"]["details"] == {"token": "was revoked"}
    # Another organization cannot see or revoke it.
    stranger = await register(client, org="Stranger")
    foreign = await gql(
        client, REVOKE_INVITATION, {"i": {"id": invitation["id"]}}, token=stranger.token
    )
    assert error_codes(foreign) == ["NOT_FOUND"]


async def test_invite_permissions_and_role_ceiling(client, owner):
    manager, _ = await join(client, owner, "MANAGER")
    read_only, _ = await join(client, owner, "READ_ONLY")
    body = await gql(
        client, INVITE, {"i": {"email": new_email(), "role": "OWNER"}}, token=manager.token
    )
    assert error_codes(body) == ["FORBIDDEN"]
    # Only an OWNER invites as MANAGER (the product's role table; kit/roles.py MANAGES).
    peer = await gql(
        client, INVITE, {"i": {"email": new_email(), "role": "MANAGER"}}, token=manager.token
    )
    assert error_codes(peer) == ["FORBIDDEN"]
    ok = await gql(
        client, INVITE, {"i": {"email": new_email(), "role": "SUPPORT"}}, token=manager.token
    )
    assert "errors" not in ok
    denied = await gql(
        client, INVITE, {"i": {"email": new_email(), "role": "READ_ONLY"}}, token=read_only.token
    )
    assert error_codes(denied) == ["FORBIDDEN"]
    bad = await gql(
        client, INVITE, {"i": {"email": "not-an-email", "role": "SUPPORT"}}, token=owner.token
    )
    assert error_codes(bad) == ["BAD_USER_INPUT"]
    assert bad["errors"][0]["extensions"]["details"] == {"email": "is not a valid email address"}
    # Everyone may read the member list; only inviters see invitations.
    listing = await gql(client, MEMBERS, token=read_only.token)
    assert listing["data"]["members"]["totalCount"] == 3
    hidden = await gql(client, INVITATIONS, token=read_only.token)
    assert error_codes(hidden) == ["FORBIDDEN"]


async def test_members_pagination_and_tenant_isolation(client, owner):
    for _ in range(3):
        await join(client, owner)
    first = await gql(client, MEMBERS, {"first": 2}, token=owner.token)
    page = first["data"]["members"]
    assert len(page["edges"]) == 2 and page["pageInfo"]["hasNextPage"] is True
    second = await gql(
        client, MEMBERS, {"first": 2, "after": page["pageInfo"]["endCursor"]}, token=owner.token
    )
    rest = second["data"]["members"]
    assert len(rest["edges"]) == 2 and rest["pageInfo"]["hasNextPage"] is False
    ids = {e["node"]["id"] for e in page["edges"] + rest["edges"]}
    assert len(ids) == 4
    stranger = await register(client, org="Stranger")
    theirs = await gql(client, MEMBERS, token=stranger.token)
    assert [e["node"]["user"]["email"] for e in theirs["data"]["members"]["edges"]] == [
        stranger.email
    ]
    some_id = next(iter(ids))
    node = await gql(
        client, "query($id: ID!) { node(id: $id) { id } }", {"id": some_id}, token=stranger.token
    )
    assert node["data"]["node"] is None
    change = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": some_id, "role": "OWNER"}}, token=stranger.token
    )
    assert error_codes(change) == ["NOT_FOUND"]


async def test_last_owner_cannot_be_removed_demoted_or_leave(client, owner):
    me_id = await member_id(client, owner, owner.email)
    demote = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": me_id, "role": "MANAGER"}}, token=owner.token
    )
    assert error_codes(demote) == ["CONFLICT"]
    assert "last owner" in demote["errors"][0]["message"]
    remove = await gql(client, REMOVE, {"i": {"memberId": me_id}}, token=owner.token)
    assert error_codes(remove) == ["CONFLICT"]
    leave = await gql(client, LEAVE, token=owner.token)
    assert error_codes(leave) == ["CONFLICT"]
    # With a second owner, the first one may step down.
    second, _ = await join(client, owner, "MANAGER")
    second_id = await member_id(client, owner, second.email)
    promoted = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": second_id, "role": "OWNER"}}, token=owner.token
    )
    assert promoted["data"]["changeMemberRole"]["member"]["role"] == "OWNER"
    demoted = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": me_id, "role": "MANAGER"}}, token=owner.token
    )
    assert demoted["data"]["changeMemberRole"]["member"]["role"] == "MANAGER"
    # Now `second` is the last owner.
    refreshed = await gql(client, REFRESH, {"i": {"refreshToken": second.refresh}})
    second_token = refreshed["data"]["refreshToken"]["accessToken"]
    assert refreshed["data"]["refreshToken"]["role"] == "OWNER"
    leave = await gql(client, LEAVE, token=second_token)
    assert error_codes(leave) == ["CONFLICT"]


async def test_role_change_applies_on_next_request(client, owner):
    member, _ = await join(client, owner, "SUPPORT")
    mid = await member_id(client, owner, member.email)
    changed = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": mid, "role": "READ_ONLY"}}, token=owner.token
    )
    assert "errors" not in changed, changed
    # The access token signed with the old role acts with the new one at once...
    me = await gql(client, ME, token=member.token)
    assert me["data"]["me"]["role"] == "READ_ONLY"
    # ...and the next refresh carries it too.
    refreshed = await gql(client, REFRESH, {"i": {"refreshToken": member.refresh}})
    assert refreshed["data"]["refreshToken"]["role"] == "READ_ONLY"
    me = await gql(client, ME, token=refreshed["data"]["refreshToken"]["accessToken"])
    assert me["data"]["me"]["role"] == "READ_ONLY"
    # Only owners touch owners.
    manager, _ = await join(client, owner, "MANAGER")
    owner_mid = await member_id(client, owner, owner.email)
    denied = await gql(
        client, CHANGE_ROLE, {"i": {"memberId": owner_mid, "role": "SUPPORT"}}, token=manager.token
    )
    assert error_codes(denied) == ["FORBIDDEN"]


async def test_removed_member_loses_sessions(client, owner):
    member, _ = await join(client, owner)
    mid = await member_id(client, owner, member.email)
    removed = await gql(client, REMOVE, {"i": {"memberId": mid}}, token=owner.token)
    assert removed["data"]["removeMember"]["removedMemberId"] == mid
    refresh = await gql(client, REFRESH, {"i": {"refreshToken": member.refresh}})
    assert error_codes(refresh) == ["UNAUTHENTICATED"]
    listing = await gql(client, MEMBERS, token=owner.token)
    assert member.email not in {
        e["node"]["user"]["email"] for e in listing["data"]["members"]["edges"]
    }
    again = await gql(client, REMOVE, {"i": {"memberId": mid}}, token=owner.token)
    assert error_codes(again) == ["NOT_FOUND"]
    # The account itself still exists: a new invitation brings the person back.
    await invite(client, owner, member.email)
    back = await gql(
        client,
        ACCEPT,
        {"i": {"token": await last_token(member.email), "password": STRONG_PASSWORD}},
    )
    assert back["data"]["acceptInvitation"]["user"]["id"] == member.user_id


async def test_member_leaves_organization(client, owner):
    member, _ = await join(client, owner)
    left = await gql(client, LEAVE, token=member.token)
    assert left["data"]["leaveOrganization"]["ok"] is True
    refresh = await gql(client, REFRESH, {"i": {"refreshToken": member.refresh}})
    assert error_codes(refresh) == ["UNAUTHENTICATED"]
    listing = await gql(client, MEMBERS, token=owner.token)
    assert listing["data"]["members"]["totalCount"] == 1


async def test_two_owners_demoting_each_other_at_once_keep_one_owner(client, owner):
    second, _ = await join(client, owner, "OWNER")
    first_id = await member_id(client, owner, owner.email)
    second_id = await member_id(client, owner, second.email)
    results = await asyncio.gather(
        gql(client, CHANGE_ROLE, {"i": {"memberId": second_id, "role": "MANAGER"}}, owner.token),
        gql(client, CHANGE_ROLE, {"i": {"memberId": first_id, "role": "MANAGER"}}, second.token),
    )
    # The loser is no longer an owner when its turn comes (its membership is read inside
    # the lock), so it may not touch an owner.
    assert sorted(tuple(error_codes(r)) for r in results) == [(), ("FORBIDDEN",)]
    listing = await gql(client, MEMBERS, token=owner.token)
    roles = [e["node"]["role"] for e in listing["data"]["members"]["edges"]]
    assert roles.count("OWNER") == 1


async def test_memberships_read_in_constant_statements(client, owner):
    """`me { memberships { organization } }` joins the organizations in: the statements do
    not grow with the number of organizations the viewer belongs to."""
    from tests.contacts.test_crm_queries import count_statements

    query = "{ me { memberships { role organization { name } } } }"
    member = await register(client, org="Home")
    counts = []
    for n in range(3):
        other = await register(client, org=f"Org {n}")
        await invite(client, other, member.email, "READ_ONLY")
        accepted = await gql(
            client, ACCEPT, {"i": {"token": await last_token(member.email)}}, token=member.token
        )
        assert "errors" not in accepted, accepted
        token = accepted["data"]["acceptInvitation"]["accessToken"]
        # The new membership's standing is read once, then cached (resolvers/authority.py).
        assert "errors" not in await gql(client, "{ me { role } }", token=token)
        with count_statements() as seen:
            body = await gql(client, query, token=token)
        assert "errors" not in body, body
        names = [m["organization"]["name"] for m in body["data"]["me"]["memberships"]]
        assert names == ["Home"] + [f"Org {i}" for i in range(n + 1)]
        counts.append(len(seen))
    assert counts == [1, 1, 1], counts
