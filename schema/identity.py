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
from models.identity import ConnectionStatus
from resolvers import identity
from resolvers.identity import connections
from resolvers.identity.connections import ConnectScope
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


strawberry.enum(
    ConnectionStatus,
    description="CONNECTED: calls go through it. NEEDS_RECONNECTION: the provider refused "
    "its grant (revoked by the person, expired, the app's credentials withdrawn); calls "
    "answer CONNECTION_REQUIRED until someone connects it again.",
)
strawberry.enum(
    ConnectScope,
    description="Whose account: USER, the caller's own; TENANT, the organization's "
    "(connected by an OWNER, used by every member who has none of their own).",
)


@strawberry.enum(description="A provider an account can be connected to.")
class ConnectedProvider(Enum):
    GOOGLE_CALENDAR = "google_calendar"
    ZOOM = "zoom"


@strawberry.type(description="A grant to act at Google Calendar or Zoom (tokens never shown).")
class ConnectedAccount:
    id: relay.GlobalID = strawberry.field(
        description="Its id (`accountId` of calendar and meeting operations)."
    )
    provider: ConnectedProvider = strawberry.field(description="Where it is.")
    scope: ConnectScope = strawberry.field(description="The caller's own or the organization's.")
    status: ConnectionStatus = strawberry.field(description="Whether calls can go through it.")
    email: str = strawberry.field(description="The account's email address at the provider.")
    external_id: str = strawberry.field(description="The provider's id of the account.")
    scopes: list[str] = strawberry.field(description="What the grant allows, as granted.")
    connected_at: dt.datetime = strawberry.field(description="When it was (last) connected.")
    last_refreshed_at: dt.datetime | None = strawberry.field(
        description="When its access token was last renewed."
    )
    access_expires_at: dt.datetime | None = strawberry.field(
        description="When the current access token expires (renewed before then)."
    )
    last_error: str | None = strawberry.field(
        description="Why it needs reconnection, when it does."
    )

    @classmethod
    def from_row(cls, row: Any) -> ConnectedAccount:
        return cls(
            id=encode_id("ConnectedAccount", row.id),
            provider=ConnectedProvider(row.provider),
            scope=connections.scope_of(row),
            status=ConnectionStatus(row.status),
            email=row.email,
            external_id=row.external_id,
            scopes=[s for s in row.scopes.split() if s],
            connected_at=row.updated_at,
            last_refreshed_at=row.last_refreshed_at,
            access_expires_at=row.access_expires_at,
            last_error=row.last_error,
        )


@strawberry.input(description="Start connecting Google Calendar.")
class ConnectGoogleCalendarInput:
    scope: ConnectScope = strawberry.field(
        default=ConnectScope.USER,
        description="USER: your own calendar. TENANT: the organization's (OWNER).",
    )


@strawberry.type(description="Where to send the browser to grant calendar access.")
class ConnectGoogleCalendarPayload:
    authorization_url: str = strawberry.field(
        description="Google's consent page (offline access to the calendar). Google sends "
        "the browser back to `/connect/google_calendar/callback`, which keeps the grant and "
        "goes on to `{FRONTEND_URL}/connections/callback#connected=GOOGLE_CALENDAR` (or "
        "`#error=CODE`)."
    )


@strawberry.input(description="The organization's Zoom server-to-server OAuth app.")
class ConnectZoomInput:
    account_id: str | None = strawberry.field(
        default=None, description="The Zoom account id (omit all three to use the stored one)."
    )
    client_id: str | None = strawberry.field(default=None, description="The app's client id.")
    client_secret: str | None = strawberry.field(
        default=None, description="The app's client secret (stored encrypted, never shown)."
    )
    base_url: str | None = strawberry.field(
        default=None,
        description="Where Zoom is (OAuth at its root, the API under /v2): an emulator or a "
        "proxy; default Zoom's own.",
    )


@strawberry.type(description="The account connected.")
class ConnectAccountPayload:
    connected_account: ConnectedAccount = strawberry.field(description="As connected.")


@strawberry.input(description="A connected account to disconnect.")
class DisconnectAccountInput:
    id: relay.GlobalID = strawberry.field(description="The connected account's id.")


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

    @query(
        operation=connections.connected_accounts,
        description="The organization's connected accounts (Google Calendar, Zoom) and your "
        "own, with their status.",
    )
    async def connected_accounts(self, info: Info) -> list[ConnectedAccount]:
        rows = await connections.connected_accounts(info.context)
        return [ConnectedAccount.from_row(r) for r in rows]


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

    @mutation(
        operation=connections.connect_google_calendar,
        description="Start connecting Google Calendar with offline access: your own, or "
        "(scope TENANT, OWNER only) the organization's.",
    )
    async def connect_google_calendar(
        self, info: Info, input: ConnectGoogleCalendarInput
    ) -> ConnectGoogleCalendarPayload:
        url = await connections.connect_google_calendar(info.context, input.scope)
        return ConnectGoogleCalendarPayload(authorization_url=url)

    @mutation(
        operation=connections.connect_zoom,
        description="Connect the organization's Zoom account through its server-to-server "
        "OAuth app (refused with BAD_USER_INPUT when Zoom refuses the app).",
    )
    async def connect_zoom(self, info: Info, input: ConnectZoomInput) -> ConnectAccountPayload:
        given = {
            "accountId": input.account_id,
            "clientId": input.client_id,
            "clientSecret": input.client_secret,
            "baseUrl": input.base_url,
        }
        app = {k: v for k, v in given.items() if v is not None} or None
        row = await connections.connect_zoom(info.context, app)
        return ConnectAccountPayload(connected_account=ConnectedAccount.from_row(row))

    @mutation(
        operation=connections.disconnect_account,
        description="Revoke a connected account's grant at the provider and forget it (the "
        "organization's: OWNER only).",
    )
    async def disconnect_account(
        self, info: Info, input: DisconnectAccountInput
    ) -> ConnectAccountPayload:
        row = await connections.disconnect_account(
            info.context, decode_id(input.id, "ConnectedAccount")
        )
        return ConnectAccountPayload(connected_account=ConnectedAccount.from_row(row))
