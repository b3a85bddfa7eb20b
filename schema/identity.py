"""Sign-in with Google or GitHub: the one-time code's exchange and the linked accounts.
The browser's part of the flow is HTTP (`/auth/{provider}/start`, gateway/http/identity.py)."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from kit.roles import Role
from resolvers import identity
from schema.accounts import AuthPayload
from schema.permissions import mutation, query
from schema.relay import decode_id, encode_id


@strawberry.enum(description="An outside account provider that signs people in.")
class SignInProvider(Enum):
    GOOGLE = "google"
    GITHUB = "github"


@strawberry.type(description="A Google or GitHub account that signs you in.")
class LinkedAccount:
    id: relay.GlobalID = strawberry.field(description="Its id, for `unlinkAccount`.")
    provider: SignInProvider = strawberry.field(description="Who vouches for it.")
    email: str = strawberry.field(description="Its email address when it was linked.")
    created_at: dt.datetime = strawberry.field(description="When it was linked.")
    last_used_at: dt.datetime | None = strawberry.field(
        description="Its last sign-in; null if never since it was linked."
    )

    @classmethod
    def from_row(cls, row: Any) -> LinkedAccount:
        return cls(
            id=encode_id("LinkedAccount", row.id),
            provider=SignInProvider(row.provider),
            email=row.email,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
        )


@strawberry.input(description="The one-time code the sign-in callback gave the front end.")
class ExchangeLoginCodeInput:
    code: str = strawberry.field(
        description="From the `#code=` fragment of `{FRONTEND_URL}/auth/callback`; works "
        "once, for LOGIN_CODE_SECONDS (60 by default)."
    )


@strawberry.input(description="A linked account to remove.")
class UnlinkAccountInput:
    id: relay.GlobalID = strawberry.field(description="The linked account's id.")


@strawberry.type(description="The linked account removed.")
class UnlinkAccountPayload:
    linked_account: LinkedAccount = strawberry.field(description="As it was.")


@strawberry.type(description="The organization's own OpenID Connect identity provider.")
class SingleSignOn:
    issuer: str = strawberry.field(description="The provider's issuer URL (discovery base).")
    client_id: str = strawberry.field(description="The gateway's client id there.")
    required: bool = strawberry.field(
        description="Whether members (all but OWNERs) must sign in through it: their "
        "password and Google/GitHub sign-ins are refused with SSO_REQUIRED."
    )
    default_role: Role = strawberry.field(description="The role of a person joining through it.")
    sign_in_path: str = strawberry.field(
        description="Where the front end sends members' browsers to sign in through it."
    )
    callback_url: str = strawberry.field(
        description="The redirect URI to register with the provider."
    )

    @classmethod
    def from_row(cls, row: Any, slug: str, callback_url: str) -> SingleSignOn:
        return cls(
            issuer=row.issuer,
            client_id=row.client_id,
            required=row.required,
            default_role=Role(row.default_role),
            sign_in_path=f"/auth/sso/{slug}/start",
            callback_url=callback_url,
        )


@strawberry.input(description="The organization's single sign-on settings.")
class ConfigureSingleSignOnInput:
    issuer: str = strawberry.field(
        description="The OpenID Connect issuer URL; its discovery document is read (through "
        "the outbound address guard) before saving."
    )
    client_id: str = strawberry.field(description="The client id the provider issued.")
    client_secret: str | None = strawberry.field(
        default=None,
        description="The client secret (stored encrypted, never shown); omit to keep the "
        "current one.",
    )
    required: bool = strawberry.field(
        default=False, description="Members (all but OWNERs) must sign in through it."
    )
    default_role: Role = strawberry.field(
        default=Role.READ_ONLY, description="The role of a person joining through it."
    )


@strawberry.type(description="The single sign-on settings saved.")
class ConfigureSingleSignOnPayload:
    single_sign_on: SingleSignOn = strawberry.field(description="As saved.")


async def _single_sign_on(info: Info, row: Any) -> SingleSignOn:
    ctx = info.context
    tenant = await identity.sso_tenant(row.tenant_id)
    return SingleSignOn.from_row(row, tenant.slug, identity.callback_url(ctx.settings, "sso"))


@strawberry.type
class Query:
    @query(
        operation=identity.get_sso,
        description="The organization's single sign-on, if it has one (OWNER).",
    )
    async def single_sign_on(self, info: Info) -> SingleSignOn | None:
        row = await identity.get_sso(info.context)
        return None if row is None else await _single_sign_on(info, row)

    @query(
        operation=identity.linked_accounts,
        description="The Google and GitHub accounts that sign you in.",
    )
    async def linked_accounts(self, info: Info) -> list[LinkedAccount]:
        return [LinkedAccount.from_row(r) for r in await identity.linked_accounts(info.context)]


@strawberry.type
class Mutation:
    @mutation(
        operation=identity.exchange_login_code,
        description="Finish a sign-in with Google or GitHub: the browser went to "
        "`/auth/{google|github}/start`, the provider sent it back, and the gateway sent it "
        "on to the front end with a one-time code; this turns the code into the usual "
        "tokens (an unknown, used or expired code: UNAUTHENTICATED).",
    )
    async def exchange_login_code(self, info: Info, input: ExchangeLoginCodeInput) -> AuthPayload:
        return AuthPayload.of(await identity.exchange_login_code(info.context, input.code))

    @mutation(
        operation=identity.unlink_account,
        description="Remove a linked account; refused (CONFLICT) when it is your last way "
        "to sign in (no password and no other linked account).",
    )
    async def unlink_account(self, info: Info, input: UnlinkAccountInput) -> UnlinkAccountPayload:
        row = await identity.unlink_account(info.context, decode_id(input.id, "LinkedAccount"))
        return UnlinkAccountPayload(linked_account=LinkedAccount.from_row(row))

    @mutation(
        operation=identity.configure_sso,
        description="Set the organization's own OpenID Connect provider (OWNER).",
    )
    async def configure_single_sign_on(
        self, info: Info, input: ConfigureSingleSignOnInput
    ) -> ConfigureSingleSignOnPayload:
        row = await identity.configure_sso(
            info.context,
            issuer=input.issuer,
            client_id=input.client_id,
            client_secret=input.client_secret,
            required=input.required,
            default_role=input.default_role,
        )
        return ConfigureSingleSignOnPayload(single_sign_on=await _single_sign_on(info, row))

    @mutation(
        operation=identity.remove_sso,
        description="Remove the organization's single sign-on; true if there was one.",
    )
    async def remove_single_sign_on(self, info: Info) -> bool:
        return await identity.remove_sso(info.context)
