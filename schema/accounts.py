"""Accounts: the viewer, organizations, sessions and email tokens."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, cast

import strawberry
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode
from strawberry import relay
from strawberry.types import Info

from kit.roles import Role
from models.tenants import Tenant
from resolvers import accounts
from resolvers.accounts import AuthResult
from schema.cache_control import cache_hint
from schema.permissions import mutation, query
from schema.relay import ModelNode, decode_id

strawberry.enum(Role, description="What a member may do; see each field's roles.")


@strawberry.type(description="A person who can sign in. Users may belong to several organizations.")
class User(relay.Node):
    id: relay.NodeID[int]
    email: str = strawberry.field(description="Sign-in email, lower-cased.")
    name: str = strawberry.field(description="Display name.")
    email_verified: bool = strawberry.field(description="The user confirmed their email address.")
    phone_verified: bool = strawberry.field(
        default=False,
        description="The user proved they hold a phone number (`checkVerificationCode`).",
    )
    created_at: dt.datetime = strawberry.field(description="When the account was created.")

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(
            id=row.id,
            email=row.email,
            name=row.name,
            email_verified=row.email_verified_at is not None,
            phone_verified=getattr(row, "phone_verified_at", None) is not None,
            created_at=row.created_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Any, required: bool = False
    ) -> list[User | None]:
        from resolvers import members

        rows = await members.users_by_ids(info.context, [str(i) for i in node_ids])
        return [None if r is None else cls.from_row(r) for r in rows]


@strawberry.type(description="A tenant: the organization whose data a caller works in.")
class Organization(ModelNode):
    _model: ClassVar[type] = Tenant
    _permission: ClassVar[str] = "tenant:read"
    id: relay.NodeID[int]
    name: str = strawberry.field(description="Display name.")
    slug: str = strawberry.field(description="Unique, URL-safe handle.")
    created_at: dt.datetime = strawberry.field(description="When it was registered.")

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Any, required: bool = False
    ) -> list[Organization | None]:
        principal = info.context.require_principal()
        rows = []
        for raw in node_ids:
            ok = str(raw) == str(principal.tenant_id)
            tenant = await accounts.load_tenant(info.context, principal.tenant_id) if ok else None
            rows.append(None if tenant is None else cls.from_row(tenant))
        return rows


NOT_LOADED: Any = object()  # a profile `me` did not read ahead

# `me` and what hangs under it depend only on the caller and change rarely: their
# answers may be cached per caller (kit/response_cache.py), bounded by
# VIEWER_CACHE_SECONDS; the writes that change them drop the entries at once.
VIEWER_HINT = [cache_hint(60)]


def _selected(info: Info) -> set[str]:
    """Names of the fields selected directly under the current field, through fragments."""
    raw = info._raw_info
    names: set[str] = set()
    pending = [node.selection_set for node in raw.field_nodes]
    while pending:
        selection_set = pending.pop()
        for sel in selection_set.selections if selection_set is not None else ():
            if isinstance(sel, FieldNode):
                names.add(sel.name.value)
            elif isinstance(sel, InlineFragmentNode):
                pending.append(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode) and sel.name.value in raw.fragments:
                pending.append(raw.fragments[sel.name.value].selection_set)
    return names


@strawberry.type(description="The signed-in caller in the current organization.")
class Viewer:
    role: Role = strawberry.field(description="The caller's role in the current organization.")
    is_api_key: bool = strawberry.field(description="The caller is an API key, not a person.")
    _tenant_id: strawberry.Private[int]
    _user_id: strawberry.Private[int | None]
    _user: strawberry.Private[Any] = NOT_LOADED
    _tenant: strawberry.Private[Any] = NOT_LOADED

    # Plain (not async) resolvers: `me` reads the profiles it is asked for ahead (mostly
    # from the viewer cache), so these answer at once, with no coroutine or task per field.
    @strawberry.field(
        description="The signed-in user; null for an API key without a creator. May be up to "
        "`VIEWER_CACHE_SECONDS` (default 5) old when changed through another gateway process.",
        directives=VIEWER_HINT,
    )
    def user(self, info: Info) -> User | None:
        if self._user is NOT_LOADED:
            return cast("User | None", self._load_user(info))
        return None if self._user is None else User.from_row(self._user)

    async def _load_user(self, info: Info) -> User | None:
        row = await accounts.viewer_user(info.context)
        return None if row is None else User.from_row(row)

    @strawberry.field(
        description="The organization this session works in. May be up to "
        "`VIEWER_CACHE_SECONDS` (default 5) old when changed through another gateway process.",
        directives=VIEWER_HINT,
    )
    def organization(self, info: Info) -> Organization:
        if self._tenant is NOT_LOADED:
            return cast("Organization", self._load_organization(info))
        return Organization.from_row(self._tenant)

    async def _load_organization(self, info: Info) -> Organization:
        return Organization.from_row(await accounts.viewer_tenant(info.context))

    @strawberry.field(
        description="Every organization the user belongs to, with their role; for an API "
        "key, only the key's own organization (with its creator's role there). May be up to "
        "`VIEWER_CACHE_SECONDS` (default 5) old when changed through another gateway process.",
        directives=VIEWER_HINT,
    )
    async def memberships(self, info: Info) -> list[MembershipInfo]:
        rows = await accounts.my_memberships(info.context)
        return [
            MembershipInfo(role=Role(m.role), organization=Organization.from_row(m.tenant))
            for m in rows
        ]


@strawberry.type(description="One organization the viewer belongs to.")
class MembershipInfo:
    role: Role = strawberry.field(description="The viewer's role there.")
    organization: Organization = strawberry.field(
        description="The organization.", directives=VIEWER_HINT
    )


@strawberry.type(description="Tokens for a new or refreshed session.")
class AuthPayload:
    access_token: str = strawberry.field(
        description="Short-lived JWT; send as `Authorization: Bearer <token>`."
    )
    access_token_expires_at: dt.datetime = strawberry.field(description="When it expires.")
    refresh_token: str = strawberry.field(
        description="Single-use token for `refreshToken`; each use returns a new one."
    )
    role: Role = strawberry.field(description="Role in the session's organization.")
    user: User = strawberry.field(description="The signed-in user.")
    organization: Organization = strawberry.field(description="The session's organization.")

    @classmethod
    def of(cls, result: AuthResult) -> AuthPayload:
        return cls(
            access_token=result.access_token,
            access_token_expires_at=dt.datetime.fromtimestamp(result.expires_at, dt.UTC),
            refresh_token=result.refresh_token,
            role=result.role,
            user=User.from_row(result.user),
            organization=Organization.from_row(result.tenant),
        )


@strawberry.type(description="Whether the operation succeeded.")
class OkPayload:
    ok: bool = strawberry.field(description="True when done.")


@strawberry.input(description="A new organization and its first owner.")
class RegisterOrganizationInput:
    organization_name: str = strawberry.field(description="Display name of the organization.")
    email: str = strawberry.field(description="The owner's email; used to sign in.")
    password: str = strawberry.field(description="At least 10 characters, not a common one.")
    name: str = strawberry.field(default="", description="The owner's display name.")


@strawberry.input(description="Credentials to sign in.")
class LoginInput:
    email: str = strawberry.field(description="Account email.")
    password: str = strawberry.field(description="Account password.")
    organization_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Organization to sign in to; default: the first one joined."
    )


@strawberry.input(description="A refresh token to exchange.")
class RefreshTokenInput:
    refresh_token: str = strawberry.field(description="The latest refresh token of the session.")


@strawberry.input(description="Which sessions to end.")
class LogoutInput:
    refresh_token: str | None = strawberry.field(
        default=None,
        description="End the session of this refresh token (default: the current one).",
    )
    everywhere: bool = strawberry.field(
        default=False, description="End all of the user's sessions."
    )


@strawberry.input(description="Organization to switch to.")
class SwitchTenantInput:
    organization_id: relay.GlobalID = strawberry.field(description="An organization you belong to.")


@strawberry.input(description="A token from an email.")
class EmailTokenInput:
    token: str = strawberry.field(description="The token the email carried.")


@strawberry.input(description="Whose password to reset.")
class RequestPasswordResetInput:
    email: str = strawberry.field(description="Account email; the answer is the same if unknown.")


@strawberry.input(description="A reset token and the new password.")
class ResetPasswordInput:
    token: str = strawberry.field(description="The token from the reset email.")
    new_password: str = strawberry.field(description="The new password.")


@strawberry.input(description="Change the signed-in user's password.")
class ChangePasswordInput:
    current_password: str = strawberry.field(description="The password now.")
    new_password: str = strawberry.field(description="The new password.")


@strawberry.input(description="Profile fields to change; omitted fields stay.")
class UpdateProfileInput:
    name: str | None = strawberry.field(default=None, description="New display name.")


@strawberry.input(description="Changes to the caller's organization; omitted fields stay.")
class UpdateOrganizationInput:
    name: str | None = strawberry.field(default=None, description="New display name.")


def _org_id(gid: relay.GlobalID | None) -> int | None:
    return None if gid is None else decode_id(gid, "Organization")


@strawberry.type
class Query:
    @query(
        operation=accounts.viewer_profiles,
        description="The signed-in caller.",
        directives=VIEWER_HINT,
    )
    async def me(self, info: Info) -> Viewer:
        p = info.context.require_principal()
        wanted = _selected(info)
        want_user, want_tenant = "user" in wanted, "organization" in wanted
        user, tenant = await accounts.viewer_profiles(
            info.context, user=want_user, tenant=want_tenant
        )
        return Viewer(
            role=p.role,
            is_api_key=p.api_key_id is not None,
            _tenant_id=p.tenant_id,
            _user_id=p.user_id,
            _user=user if want_user else NOT_LOADED,
            _tenant=tenant if want_tenant else NOT_LOADED,
        )


@strawberry.type
class Mutation:
    @mutation(
        operation=accounts.register_organization,
        description="Create an organization and its owner; signs in.",
    )
    async def register_organization(
        self, info: Info, input: RegisterOrganizationInput
    ) -> AuthPayload:
        return AuthPayload.of(
            await accounts.register_organization(
                info.context,
                organization_name=input.organization_name,
                email=input.email,
                password=input.password,
                name=input.name,
            )
        )

    @mutation(operation=accounts.login, description="Sign in with email and password.")
    async def login(self, info: Info, input: LoginInput) -> AuthPayload:
        return AuthPayload.of(
            await accounts.login(
                info.context,
                email=input.email,
                password=input.password,
                tenant_id=_org_id(input.organization_id),
            )
        )

    @mutation(
        operation=accounts.refresh_session,
        description="Exchange a refresh token for new tokens (rotation). Each refresh token "
        "works once: a second use, even at the same moment as the first, ends the whole "
        "session (REFRESH_TOKEN_REUSED): the pair the first use got is revoked too, its "
        "access token stopping at its next request; sign in again.",
    )
    async def refresh_token(self, info: Info, input: RefreshTokenInput) -> AuthPayload:
        return AuthPayload.of(await accounts.refresh_session(info.context, input.refresh_token))

    @mutation(
        operation=accounts.logout,
        description="End the current session, one session, or all.",
    )
    async def logout(self, info: Info, input: LogoutInput | None = None) -> OkPayload:
        input = input or LogoutInput()
        return OkPayload(
            ok=await accounts.logout(info.context, input.refresh_token, input.everywhere)
        )

    @mutation(
        operation=accounts.switch_tenant,
        description="Start a session in another organization you belong to.",
    )
    async def switch_tenant(self, info: Info, input: SwitchTenantInput) -> AuthPayload:
        tenant_id = decode_id(input.organization_id, "Organization")
        return AuthPayload.of(await accounts.switch_tenant(info.context, tenant_id))

    @mutation(
        operation=accounts.request_email_verification,
        description="Send a new email-verification token.",
    )
    async def request_email_verification(self, info: Info) -> OkPayload:
        return OkPayload(ok=await accounts.request_email_verification(info.context))

    @mutation(
        operation=accounts.verify_email,
        description="Confirm an email address with the emailed token.",
    )
    async def verify_email(self, info: Info, input: EmailTokenInput) -> User:
        return User.from_row(await accounts.verify_email(info.context, input.token))

    @mutation(
        operation=accounts.request_password_reset,
        description="Email a password-reset token if the account exists.",
    )
    async def request_password_reset(
        self, info: Info, input: RequestPasswordResetInput
    ) -> OkPayload:
        return OkPayload(ok=await accounts.request_password_reset(info.context, input.email))

    @mutation(
        operation=accounts.reset_password,
        description="Set a new password with a reset token; ends all sessions.",
    )
    async def reset_password(self, info: Info, input: ResetPasswordInput) -> OkPayload:
        return OkPayload(
            ok=await accounts.reset_password(info.context, input.token, input.new_password)
        )

    @mutation(
        operation=accounts.change_password,
        description="Change your password; your other sessions end.",
    )
    async def change_password(self, info: Info, input: ChangePasswordInput) -> OkPayload:
        return OkPayload(
            ok=await accounts.change_password(
                info.context,
                current_password=input.current_password,
                new_password=input.new_password,
            )
        )

    @mutation(operation=accounts.update_profile, description="Change your profile.")
    async def update_profile(self, info: Info, input: UpdateProfileInput) -> User:
        return User.from_row(await accounts.update_profile(info.context, name=input.name))

    @mutation(
        operation=accounts.update_organization,
        description="Rename the caller's organization.",
    )
    async def update_organization(self, info: Info, input: UpdateOrganizationInput) -> Organization:
        return Organization.from_row(
            await accounts.update_organization(info.context, name=input.name)
        )
