"""Calendar fixtures: the served gateway of tests/identity (its emulators at its own
PUBLIC_URL), an organization whose owner connected Google Calendar, and members."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest

from models.mail import OutboundEmail
from tests.conftest import STRONG_PASSWORD, Account, gql, register
from tests.identity.conftest import Site, site  # noqa: F401 - the fixture, shared
from tests.identity.test_connections import connect_calendar

INVITE = """mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitation { id } } }"""
ACCEPT = """mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) {
  accessToken user { id } } }"""


@dataclass
class Org:
    site: Site
    owner: Account


@pytest.fixture
async def org(site: Site) -> Org:  # noqa: F811 - the fixture above
    owner = await register(site.browser)
    assert await connect_calendar(site, owner) == {"connected": "GOOGLE_CALENDAR"}
    return Org(site, owner)


async def member(site: Site, owner: Account, role: str) -> Account:  # noqa: F811
    """A new member of the owner's organization with `role`, signed in."""
    email = f"member-{uuid.uuid4().hex[:10]}@example.com"
    body = await gql(site.browser, INVITE, {"i": {"email": email, "role": role}}, owner.token)
    assert "errors" not in body, body
    mail = await OutboundEmail.filter(recipient=email).order_by("-id").first()
    assert mail is not None
    token = re.search(r"#token=([A-Za-z0-9_-]{40,})$", mail.text, re.MULTILINE)
    assert token, mail.text
    accepted = await gql(
        site.browser,
        ACCEPT,
        {"i": {"token": token.group(1), "name": "Member", "password": STRONG_PASSWORD}},
    )
    assert "errors" not in accepted, accepted
    data = accepted["data"]["acceptInvitation"]
    return Account(data["accessToken"], "", email, data["user"]["id"], owner.org_id)
