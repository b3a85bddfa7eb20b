"""Members of the current organization, their roles, and invitations to join."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from kit.errors import NotFound
from kit.roles import Role
from models.members import Invitation as InvitationRow
from models.members import Membership
from resolvers import members
from resolvers import members as member_ops  # `members` is also a field of Query
from schema.accounts import AuthPayload, OkPayload, User
from schema.permissions import mutation, query
from schema.relay import After, Connection, First, ModelNode, decode_id, encode_id

ROLE_NOTE = (
    "A change applies on the member's next request, with whatever token or API key they "
    "hold (the role inside an access token is not trusted beyond the current membership)."
)
MANAGES_NOTE = (
    "An OWNER manages every role; a MANAGER only members below MANAGER (SUPPORT, "
    "ACCOUNTING, READ_ONLY): only an OWNER invites as, removes, promotes to or demotes "
    "from OWNER or MANAGER."
)


@strawberry.type(description="A person's membership in the current organization.")
class Member(ModelNode):
    _model: ClassVar[type] = Membership
    _permission: ClassVar[str] = "members:read"
    id: relay.NodeID[int]
    role: Role = strawberry.field(description=f"The member's role here. {ROLE_NOTE}")
    joined_at: dt.datetime = strawberry.field(description="When they joined.")
    _user_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Any) -> Member:
        return cls(id=row.id, role=Role(row.role), joined_at=row.created_at, _user_id=row.user_id)

    @strawberry.field(description="The member's account (name and email).")
    async def user(self, info: Info) -> User:
        row = await members.load_member_user(info.context, self._user_id)
        if row is None:  # memberships are deleted with their user; kept for the type checker
            raise NotFound("Account not found.")
        return User.from_row(row)


@strawberry.type(description="A pending invitation to join the current organization.")
class Invitation(ModelNode):
    _model: ClassVar[type] = InvitationRow
    _permission: ClassVar[str] = "members:invite"
    id: relay.NodeID[int]
    email: str = strawberry.field(description="Address the invitation was sent to.")
    role: Role = strawberry.field(description="Role the invitee gets on acceptance.")
    created_at: dt.datetime = strawberry.field(description="When it was sent.")
    expires_at: dt.datetime = strawberry.field(description="When its token stops working.")
    accepted_at: dt.datetime | None = strawberry.field(description="When it was accepted.")
    revoked_at: dt.datetime | None = strawberry.field(
        description="When it was revoked or replaced by a newer invitation."
    )
    _invited_by_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: Any) -> Invitation:
        return cls(
            id=row.id,
            email=row.email,
            role=Role(row.role),
            created_at=row.created_at,
            expires_at=row.expires_at,
            accepted_at=row.accepted_at,
            revoked_at=row.revoked_at,
            _invited_by_id=row.invited_by_id,
        )

    @strawberry.field(description="Who sent it; null when sent by an API key or deleted.")
    async def invited_by(self, info: Info) -> User | None:
        if self._invited_by_id is None:
            return None
        row = await members.load_member_user(info.context, self._invited_by_id)
        return None if row is None else User.from_row(row)


# Inputs and payloads -------------------------------------------------------------------


@strawberry.input(description="Whom to invite, and with which role.")
class InviteMemberInput:
    email: str = strawberry.field(description="The invitee's email address.")
    role: Role = strawberry.field(description=f"Role on acceptance. {MANAGES_NOTE}")


@strawberry.type(description="The invitation just sent.")
class InviteMemberPayload:
    invitation: Invitation = strawberry.field(
        description="The invitation; its token went only to the invitee's email."
    )


@strawberry.input(description="The invitation to withdraw.")
class RevokeInvitationInput:
    id: relay.GlobalID = strawberry.field(description="Id of a pending invitation.")


@strawberry.type(description="The withdrawn invitation.")
class RevokeInvitationPayload:
    invitation: Invitation = strawberry.field(description="The invitation, now revoked.")


@strawberry.input(description="Accept an invitation with the emailed token.")
class AcceptInvitationInput:
    token: str = strawberry.field(description="The token from the invitation email.")
    name: str | None = strawberry.field(
        default=None, description="Display name, when a new account is created."
    )
    password: str | None = strawberry.field(
        default=None,
        description="For a new account: its password (at least 10 characters). For an "
        "existing account: its password, unless you are signed in as that account.",
    )


@strawberry.input(description="A member and their new role.")
class ChangeMemberRoleInput:
    member_id: relay.GlobalID = strawberry.field(description="Id of the member.")
    role: Role = strawberry.field(
        description="The new role. API keys the member created are capped at it (each keeps "
        "only the permissions the new role also holds)."
    )


@strawberry.type(description="The member with their new role.")
class ChangeMemberRolePayload:
    member: Member = strawberry.field(description=f"The member. {ROLE_NOTE}")


@strawberry.input(description="The member to remove.")
class RemoveMemberInput:
    member_id: relay.GlobalID = strawberry.field(description="Id of the member.")


@strawberry.type(description="Which member was removed.")
class RemoveMemberPayload:
    removed_member_id: relay.GlobalID = strawberry.field(description="Id of the removed member.")


def _member_id(gid: relay.GlobalID) -> int:
    return decode_id(gid, "Member")


@strawberry.type
class Query:
    @query(operation=member_ops.list_members, description="Members of the current organization.")
    async def members(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Member]:
        page = await members.list_members(info.context, first=first, after=after)
        return Connection.of(page, Member.from_row)

    @query(
        operation=member_ops.list_invitations,
        description="Pending invitations of the current organization, newest first.",
    )
    async def invitations(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Invitation]:
        page = await members.list_invitations(info.context, first=first, after=after)
        return Connection.of(page, Invitation.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=member_ops.invite_member,
        description="Invite someone by email; a pending invitation to the same address is "
        "replaced. The single-use token goes only to the email.",
    )
    async def invite_member(self, info: Info, input: InviteMemberInput) -> InviteMemberPayload:
        row = await members.invite_member(info.context, email=input.email, role=input.role.value)
        return InviteMemberPayload(invitation=Invitation.from_row(row))

    @mutation(
        operation=member_ops.revoke_invitation,
        description=f"Withdraw a pending invitation (of a role you manage). {MANAGES_NOTE}",
    )
    async def revoke_invitation(
        self, info: Info, input: RevokeInvitationInput
    ) -> RevokeInvitationPayload:
        row = await members.revoke_invitation(
            info.context, invitation_id=decode_id(input.id, "Invitation")
        )
        return RevokeInvitationPayload(invitation=Invitation.from_row(row))

    @mutation(
        operation=member_ops.accept_invitation,
        description="Join an organization with an invitation token, creating the account if "
        "none exists for the invited email; signs in to that organization.",
    )
    async def accept_invitation(self, info: Info, input: AcceptInvitationInput) -> AuthPayload:
        return AuthPayload.of(
            await members.accept_invitation(
                info.context, token=input.token, name=input.name, password=input.password
            )
        )

    @mutation(
        operation=member_ops.change_member_role,
        description="Change a member's role; the last owner cannot be demoted. API keys the "
        f"member created are capped at the new role. {MANAGES_NOTE} {ROLE_NOTE}",
    )
    async def change_member_role(
        self, info: Info, input: ChangeMemberRoleInput
    ) -> ChangeMemberRolePayload:
        row = await members.change_member_role(
            info.context, member_id=_member_id(input.member_id), role=input.role.value
        )
        return ChangeMemberRolePayload(member=Member.from_row(row))

    @mutation(
        operation=member_ops.remove_member,
        description="Remove a member: their sessions, access tokens and open sockets here "
        "end on their next request, and the API keys they created here are revoked. The "
        f"last owner cannot be removed. {MANAGES_NOTE}",
    )
    async def remove_member(self, info: Info, input: RemoveMemberInput) -> RemoveMemberPayload:
        row = await members.remove_member(info.context, member_id=_member_id(input.member_id))
        return RemoveMemberPayload(removed_member_id=encode_id("Member", row.id))

    @mutation(
        operation=member_ops.leave_organization,
        description="Leave the current organization; your sessions there and the API keys "
        "you created there end. The last owner cannot leave.",
    )
    async def leave_organization(self, info: Info) -> OkPayload:
        return OkPayload(ok=await members.leave_organization(info.context))
