"""Connected accounts (the identity area's): a member's or the organization's grant to act
at Google Calendar or Zoom, and the access tokens the calendar and meetings areas call with.

- Google Calendar: `connectGoogleCalendar` answers Google's authorization URL (code flow
  with PKCE, state and nonce, the calendar scope, `access_type=offline` and
  `prompt=consent`, so the code brings a refresh token); the browser comes back to
  `GET /connect/google_calendar/callback` (gateway/http/identity.py): `finish_connect`
  uses the state up (once, bound to the member who started it, whose standing is read
  again), redeems the code with the verifier, checks the ID token and keeps the grant.
  A member connects their own calendar (`connections:own`); an OWNER the organization's
  (`connections:tenant`). The app the grant is for (client id and secret) is the
  organization's `google_calendar` credential, else the operator's (GOOGLE_ID /
  GOOGLE_SECRET, as for sign-in), else the sandbox.
- Zoom: `connectZoom` (OWNER) — a server-to-server OAuth app is the Zoom account's, so
  the connection is the organization's: the app's account id, client id and secret are
  stored as the organization's `zoom` credential (encrypted, verified), and access tokens
  come from `grant_type=account_credentials`.

Tokens: refresh token and access token are vault-encrypted columns (the vault key
rotation covers them). `access_token(...)` answers the live token, renewing it when it
expires within RENEW_MARGIN: one renewal at a time per account in this process (a lock;
the callers that waited read its outcome), and across processes through the row — the
renewer takes it with a conditional update on `version` (holding it for LEASE), writes
the new token conditionally on the version it took, and any other process waits for that
and reads the new token instead of renewing again. A provider that refuses the grant
(`invalid_grant`, a withdrawn app) marks the account NEEDS_RECONNECTION: shown by
`connectedAccounts` and `integrationHealth`, and calls answer CONNECTION_REQUIRED until
someone connects again. `disconnectAccount` revokes the grant at the provider and forgets it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import uuid
import weakref
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, GatewayError, NotFound
from kit.roles import allowed
from kit.security import hash_token
from kit.settings import Settings
from kit.vault import vault_for
from models.accounts import User
from models.credentials import TENANT_SLOT, user_slot
from models.identity import ConnectedAccount, ConnectionStatus, OAuthFlow
from models.members import Membership
from models.tenancy import scoped
from providers import google_calendar, oauth, zoom
from providers.errors import ProviderError
from providers.oauth import GrantRevoked, Secrets, SignInRefused, Tokens
from resolvers.authority import confirm
from resolvers.context import Context, Services
from resolvers.credentials import (
    CredentialScope,
    ResolvedCredential,
    call_labels,
    is_own_sandbox,
    remove_credential,
    resolve_tenant_credential,
    set_credential,
)
from resolvers.operations import operation
from resolvers.upstream import provider_registry, to_gateway_error

log = logging.getLogger("switchboard.connections")

GOOGLE_CALENDAR = google_calendar.PROVIDER
ZOOM = zoom.PROVIDER
CONNECTABLE = (GOOGLE_CALENDAR, ZOOM)
CALLBACK_PATH = "/connect/{provider}/callback"
RENEW_MARGIN = dt.timedelta(seconds=120)  # renew a token that expires sooner than this
LEASE = dt.timedelta(seconds=30)  # how long a renewal holds the row
WAIT_STEP = 0.05  # seconds between two looks at a row another process renews
NAMES = {GOOGLE_CALENDAR: "Google Calendar", ZOOM: "Zoom"}


class ConnectScope(StrEnum):
    USER = "USER"
    TENANT = "TENANT"


class ConnectionRequired(GatewayError):
    """No usable connected account: none connected, or its grant was refused
    (`reason` NOT_CONNECTED or NEEDS_RECONNECTION)."""

    code = "CONNECTION_REQUIRED"
    http_status = 409


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class ConnectionsState:
    """This process's renewals in flight: one lock per account, alive while used."""

    locks: weakref.WeakValueDictionary[int, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def lock(self, account_id: int) -> asyncio.Lock:
        lock = self.locks.get(account_id)
        if lock is None:
            lock = asyncio.Lock()
            self.locks[account_id] = lock
        return lock


def state_of(services: Services) -> ConnectionsState:
    if services.connections is None:
        services.connections = ConnectionsState()
    return services.connections


def _system_ctx(services: Services) -> Context:
    return Context(services=services, request_id=f"conn-{uuid.uuid4().hex[:12]}")


def callback_url(settings: Settings, provider: str) -> str:
    return settings.base_url + CALLBACK_PATH.format(provider=provider)


def _encrypt(settings: Settings, value: str) -> str:
    return vault_for(settings.vault_keys).encrypt(value) if value else ""


def _decrypt(settings: Settings, value: str) -> str:
    return vault_for(settings.vault_keys).decrypt(value) if value else ""


def guarded(settings: Settings, base_url: str | None) -> bool:
    """Whether a connected account's base URL is a tenant's (dialled through the guard):
    any but the vendor's own and this gateway's sandboxes."""
    return bool(base_url) and not is_own_sandbox(settings, str(base_url))


# The app an account's grant is for ---------------------------------------------------------


async def app_credential(services: Services, provider: str, tenant_id: int) -> ResolvedCredential:
    """The OAuth client (Google Calendar) or server-to-server app (Zoom) of `tenant_id`:
    its own credential, else the operator's, else the sandbox's."""
    return await resolve_tenant_credential(_system_ctx(services), provider, tenant_id)


def _issuer(settings: Settings, credential: ResolvedCredential) -> str:
    return (credential.base_url or settings.google_issuer).rstrip("/")


def zoom_app(credential: ResolvedCredential) -> zoom.ZoomApp:
    return zoom.ZoomApp.of(credential.secrets, credential.base_url, guard=credential.guard_url)


async def _renew(services: Services, row: ConnectedAccount) -> Tokens:
    """One new access token for `row` from its provider (GrantRevoked: refused)."""
    credential = await app_credential(services, row.provider, row.tenant_id)
    if credential.secrets.get("client_id", "") != row.client_id:
        raise GrantRevoked(
            row.provider,
            "client_changed",
            "The app this account was connected with is no longer the configured one.",
        )
    http = provider_registry(services).http(row.provider)
    if row.provider == ZOOM:
        return await zoom.account_token(http, zoom_app(credential))
    document = await oauth.oidc_discovery(
        http, _issuer(services.settings, credential), guard=credential.guard_url
    )
    return await oauth.refresh_tokens(
        http,
        document["token_endpoint"],
        client_id=credential.secrets["client_id"],
        client_secret=credential.secrets.get("client_secret", ""),
        refresh_token=_decrypt(services.settings, row.refresh_token),
        guard=credential.guard_url,
    )


# Access tokens ----------------------------------------------------------------------------


def _live(settings: Settings, row: ConnectedAccount, stale: str | None) -> str | None:
    """The row's access token when it can be used now (not `stale`, not about to expire)."""
    if row.status != ConnectionStatus.CONNECTED.value or not row.access_token:
        return None
    if row.access_expires_at is None or row.access_expires_at <= _now() + RENEW_MARGIN:
        return None
    token = _decrypt(settings, row.access_token)
    return None if stale is not None and token == stale else token


def _needs_reconnection(row: ConnectedAccount) -> ConnectionRequired:
    name = NAMES.get(row.provider, row.provider)
    return ConnectionRequired(
        f"{name} refused this connection's grant; connect it again.",
        provider=row.provider,
        reason=ConnectionStatus.NEEDS_RECONNECTION.value,
    )


async def _load(account_id: int) -> ConnectedAccount:
    row = await ConnectedAccount.get_or_none(id=account_id)
    if row is None:
        raise ConnectionRequired("This account was disconnected.", reason="NOT_CONNECTED")
    if row.status != ConnectionStatus.CONNECTED.value:
        raise _needs_reconnection(row)
    return row


async def access_token(services: Services, account_id: int, *, stale: str | None = None) -> str:
    """The account's live access token (module docstring); `stale`: the token a call was
    just refused with (renew unless someone already did)."""
    settings = services.settings
    token = _live(settings, await _load(account_id), stale)
    if token is not None:
        return token
    async with state_of(services).lock(account_id):
        deadline = asyncio.get_running_loop().time() + LEASE.total_seconds() + 5
        while True:
            row = await _load(account_id)  # another caller may have renewed meanwhile
            token = _live(settings, row, stale)
            if token is not None:
                return token
            now = _now()
            took = (
                await ConnectedAccount.filter(id=row.id, version=row.version)
                .filter(Q(renewing_until=None) | Q(renewing_until__lt=now))
                .update(version=row.version + 1, renewing_until=now + LEASE)
            )
            if took:
                return await _renew_held(services, row, row.version + 1)
            # Another process renews it (or just wrote its outcome): read again shortly.
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionRequired(
                    "The connection's token renewal did not finish; try again.",
                    reason="RENEWAL_PENDING",
                )
            await asyncio.sleep(WAIT_STEP)


async def _renew_held(services: Services, row: ConnectedAccount, version: int) -> str:
    """Renew `row`, which this caller holds at `version`, and write the outcome."""
    settings = services.settings
    mine = ConnectedAccount.filter(id=row.id, version=version)
    try:
        tokens = await _renew(services, row)
    except GrantRevoked as exc:
        log.warning(
            "connected account needs reconnection",
            extra={"provider": row.provider, "account_id": row.id, "reason": exc.code},
        )
        await mine.update(
            status=ConnectionStatus.NEEDS_RECONNECTION.value,
            last_error=f"{exc.code}: the provider refused the grant"[:500],
            access_token="",
            renewing_until=None,
            version=version + 1,
        )
        row.status = ConnectionStatus.NEEDS_RECONNECTION.value
        raise _needs_reconnection(row) from None
    except BaseException:
        await mine.update(renewing_until=None)  # the next caller tries again
        raise
    now = _now()
    values: dict[str, Any] = {
        "access_token": _encrypt(settings, tokens.access_token),
        "access_expires_at": now + dt.timedelta(seconds=tokens.expires_in),
        "last_refreshed_at": now,
        "last_error": None,
        "renewing_until": None,
        "version": version + 1,
    }
    if tokens.refresh_token:  # a provider that rotates refresh tokens
        values["refresh_token"] = _encrypt(settings, tokens.refresh_token)
    if not await mine.update(**values):
        # Disconnected or connected again while we renewed: the row has moved on.
        raise ConnectionRequired("This account was connected again; retry.", reason="CHANGED")
    return tokens.access_token


@dataclass
class AccountTokens:
    """`providers.oauth.TokenSource` for one connected account."""

    services: Services
    account_id: int
    provider: str

    @property
    def key(self) -> str:
        return f"{self.provider}:account:{self.account_id}"

    async def token(self) -> str:
        return await access_token(self.services, self.account_id)

    async def renewed(self, stale: str) -> str:
        return await access_token(self.services, self.account_id, stale=stale)


# The account a call uses --------------------------------------------------------------------


def _own_slot(ctx: Context) -> str | None:
    principal = ctx.require_principal()
    if principal.user_id is None or principal.api_key_id is not None:
        return None  # an API key acts for the organization
    return user_slot(principal.user_id)


async def visible_account(ctx: Context, account_id: int) -> ConnectedAccount:
    """One of the caller's accounts (their own or the organization's), else NOT_FOUND:
    another member's account is nobody else's to use."""
    row = await scoped(ConnectedAccount, ctx.tenant_id).filter(id=account_id).first()
    if row is None or row.slot not in (TENANT_SLOT, _own_slot(ctx)):
        raise NotFound("Connected account not found.")
    return row


async def usable_account(
    ctx: Context, provider: str, account_id: int | None = None
) -> ConnectedAccount:
    """The account a call to `provider` goes through: the one named (the caller's own or
    the organization's), else the caller's own, else the organization's."""
    if account_id is not None:
        row = await visible_account(ctx, account_id)
        if row.provider != provider:
            raise NotFound("Connected account not found.")
    else:
        slots = [s for s in (_own_slot(ctx), TENANT_SLOT) if s]
        rows = {
            r.slot: r
            for r in await scoped(ConnectedAccount, ctx.tenant_id).filter(
                provider=provider, slot__in=slots
            )
        }
        found = next((rows[s] for s in slots if s in rows), None)
        if found is None:
            raise ConnectionRequired(
                f"Connect {NAMES.get(provider, provider)} first.",
                provider=provider,
                reason="NOT_CONNECTED",
            )
        row = found
    if row.status != ConnectionStatus.CONNECTED.value:
        raise _needs_reconnection(row)
    return row


def _labels(ctx: Context) -> dict[str, str]:
    labels = call_labels(ctx)
    labels["credential_source"] = "TENANT"
    return labels


def calendar_client(ctx: Context, row: ConnectedAccount) -> google_calendar.GoogleCalendarClient:
    return google_calendar.GoogleCalendarClient(
        provider_registry(ctx.services).http(GOOGLE_CALENDAR),
        AccountTokens(ctx.services, row.id, row.provider),
        base_url=row.base_url or google_calendar.API_URL,
        labels=_labels(ctx),
        guard_url=guarded(ctx.settings, row.base_url),
    )


def zoom_client(
    services: Services, row: ConnectedAccount, ctx: Context | None = None
) -> zoom.ZoomClient:
    base = (row.base_url or "").rstrip("/")
    return zoom.ZoomClient(
        provider_registry(services).http(ZOOM),
        AccountTokens(services, row.id, row.provider),
        base_url=f"{base}/v2" if base else zoom.API_URL,
        labels=_labels(ctx) if ctx is not None else {"tenant_id": str(row.tenant_id)},
        guard_url=guarded(services.settings, row.base_url),
    )


# Listing -----------------------------------------------------------------------------------


@operation("connections:read")
async def connected_accounts(ctx: Context) -> list[ConnectedAccount]:
    """The organization's connected accounts and the caller's own."""
    slots = [s for s in (TENANT_SLOT, _own_slot(ctx)) if s]
    return await scoped(ConnectedAccount, ctx.tenant_id).filter(slot__in=slots).order_by("id")


def scope_of(row: ConnectedAccount) -> ConnectScope:
    return ConnectScope.TENANT if row.slot == TENANT_SLOT else ConnectScope.USER


# Keeping a grant ---------------------------------------------------------------------------


async def _keep(
    settings: Settings,
    *,
    tenant_id: int,
    provider: str,
    slot: str,
    user_id: int | None,
    values: dict[str, Any],
) -> tuple[ConnectedAccount, str]:
    """Insert or replace the account in `slot`; answers it and the refresh token it had
    before (to revoke), "" when none."""
    for attempt in range(2):
        try:
            async with in_transaction():
                row = (
                    await scoped(ConnectedAccount, tenant_id)
                    .filter(provider=provider, slot=slot)
                    .select_for_update()
                    .first()
                )
                if row is None:
                    made = await ConnectedAccount.create(
                        tenant_id=tenant_id, provider=provider, slot=slot, user_id=user_id, **values
                    )
                    return made, ""
                before = _decrypt(settings, row.refresh_token)
                await ConnectedAccount.filter(id=row.id).update(
                    **values, version=row.version + 1, renewing_until=None
                )
                return await ConnectedAccount.get(id=row.id), before
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _granted(settings: Settings, tokens: Tokens) -> dict[str, Any]:
    now = _now()
    return {
        "status": ConnectionStatus.CONNECTED.value,
        "access_token": _encrypt(settings, tokens.access_token),
        "access_expires_at": now + dt.timedelta(seconds=tokens.expires_in),
        "last_refreshed_at": now,
        "last_error": None,
        "scopes": tokens.scope[:2000],
    }


# Google Calendar: the authorization code flow ------------------------------------------------


@operation("connections:own")
async def connect_google_calendar(ctx: Context, scope: ConnectScope) -> str:
    """Start connecting Google Calendar (the caller's own, or with TENANT the
    organization's, OWNER only): the URL to send the browser to."""
    principal = ctx.require_principal()
    if _own_slot(ctx) is None:
        raise BadUserInput(
            "A person connects a calendar, not an API key.",
            details={"scope": "sign in as a member to connect an account"},
        )
    if scope is ConnectScope.TENANT:
        await confirm(ctx, "connections:tenant")
    credential = await app_credential(ctx.services, GOOGLE_CALENDAR, principal.tenant_id)
    assert principal.user_id is not None
    user = await User.get(id=principal.user_id)
    flow = Secrets.new()
    await OAuthFlow.create(
        provider=GOOGLE_CALENDAR,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        connect_scope=scope.value,
        state_hash=hash_token(flow.state),
        browser_hash=hash_token(secrets.token_urlsafe(32)),  # bound to the member instead
        verifier=flow.verifier,
        nonce=flow.nonce,
        expires_at=_now() + dt.timedelta(seconds=ctx.settings.oauth_flow_seconds),
    )
    try:
        return await oauth.oidc_authorize_url(
            provider_registry(ctx.services).http(GOOGLE_CALENDAR),
            issuer=_issuer(ctx.settings, credential),
            client_id=credential.secrets["client_id"],
            redirect_uri=callback_url(ctx.settings, GOOGLE_CALENDAR),
            secrets=flow,
            login_hint=user.email,
            scope=f"openid email {google_calendar.SCOPE}",
            extra={"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"},
            guard=credential.guard_url,
        )
    except ProviderError as err:
        raise to_gateway_error(err) from None


async def finish_connect(
    ctx: Context, provider: str, *, state: str, code: str, error: str
) -> ConnectedAccount:
    """The browser is back from Google: keep the grant. Raises SignInRefused (its `code`
    says why), a GatewayError or a ProviderError."""
    if provider != GOOGLE_CALENDAR:
        raise SignInRefused("OAUTH_PROVIDER_UNAVAILABLE", "Nothing to connect there.")
    digest = hash_token((state or "")[:200])
    claimed = await OAuthFlow.filter(provider=provider, state_hash=digest, used_at=None).update(
        used_at=_now()
    )
    flow = await OAuthFlow.get_or_none(state_hash=digest) if claimed else None
    if flow is None or flow.expires_at < _now() or flow.user_id is None or flow.tenant_id is None:
        raise SignInRefused("OAUTH_STATE_INVALID", "This connection is unknown, used or expired.")
    if error or not code:
        raise SignInRefused("OAUTH_DENIED", "The connection was cancelled at the provider.")
    tenant_wide = flow.connect_scope == ConnectScope.TENANT.value
    # The member's standing now: one removed or demoted meanwhile connects nothing.
    member = await Membership.get_or_none(user_id=flow.user_id, tenant_id=flow.tenant_id)
    need = "connections:tenant" if tenant_wide else "connections:own"
    if member is None or not allowed(member.role, need):
        raise SignInRefused("FORBIDDEN", "You may no longer connect this account.")
    credential = await app_credential(ctx.services, provider, flow.tenant_id)
    client_id = credential.secrets["client_id"]
    identity, tokens = await oauth.oidc_grant(
        provider_registry(ctx.services).http(provider),
        issuer=_issuer(ctx.settings, credential),
        client_id=client_id,
        client_secret=credential.secrets.get("client_secret", ""),
        code=code[:2048],
        redirect_uri=callback_url(ctx.settings, provider),
        secrets=Secrets(state=state, verifier=flow.verifier, nonce=flow.nonce),
        guard=credential.guard_url,
        provider=provider,
    )
    if google_calendar.SCOPE not in tokens.scope.split():
        raise SignInRefused("CONNECTION_SCOPE_MISSING", "Calendar access was not granted.")
    if not tokens.refresh_token:
        raise SignInRefused("CONNECTION_NOT_OFFLINE", "Google granted no offline access.")
    values = {
        **_granted(ctx.settings, tokens),
        "external_id": identity.subject[:255],
        "email": identity.email[:320],
        "client_id": client_id[:300],
        "base_url": credential.base_url,
        "refresh_token": _encrypt(ctx.settings, tokens.refresh_token),
        "connected_by_id": flow.user_id,
    }
    row, before = await _keep(
        ctx.settings,
        tenant_id=flow.tenant_id,
        provider=provider,
        slot=TENANT_SLOT if tenant_wide else user_slot(flow.user_id),
        user_id=None if tenant_wide else flow.user_id,
        values=values,
    )
    if before and before != tokens.refresh_token:
        await _revoke_refresh(ctx.services, row, before)
    log.info("account connected", extra={"provider": provider, "account_id": row.id})
    return row


# Zoom: the organization's server-to-server app -------------------------------------------


@dataclass
class _Fixed:
    """A token source of one token (the first call after a grant)."""

    value: str
    key: str = "zoom:connect"

    async def token(self) -> str:
        return self.value

    async def renewed(self, stale: str) -> str:
        return self.value


@operation("connections:tenant")
async def connect_zoom(ctx: Context, app: dict[str, str] | None) -> ConnectedAccount:
    """Connect the organization's Zoom account (OWNER): with `app` (account id, client id,
    client secret of a server-to-server OAuth app) stored as its `zoom` credential first;
    without, the credential it already has (or the operator's, or the sandbox)."""
    principal = ctx.require("connections:tenant")
    if app:
        await set_credential(ctx, CredentialScope.TENANT, ZOOM, app)
    credential = await app_credential(ctx.services, ZOOM, principal.tenant_id)
    zoom_app_ = zoom_app(credential)
    http = provider_registry(ctx.services).http(ZOOM)
    try:
        tokens = await zoom.account_token(http, zoom_app_)
        client = zoom.ZoomClient(
            http,
            _Fixed(tokens.access_token),
            base_url=zoom_app_.api_url,
            labels=_labels(ctx),
            guard_url=zoom_app_.guard_url,
        )
        me = await client.me()
    except GrantRevoked:
        raise BadUserInput(
            "Zoom refused the app's credentials.",
            details={"secrets.clientSecret": "was refused by zoom"},
        ) from None
    except ProviderError as err:
        raise to_gateway_error(err) from None
    row, _ = await _keep(
        ctx.settings,
        tenant_id=principal.tenant_id,
        provider=ZOOM,
        slot=TENANT_SLOT,
        user_id=None,
        values={
            **_granted(ctx.settings, tokens),
            "external_id": str(me.get("account_id") or zoom_app_.account_id)[:255],
            "email": str(me.get("email") or "")[:320],
            "client_id": zoom_app_.client_id[:300],
            "base_url": credential.base_url,
            "refresh_token": "",
            "connected_by_id": principal.user_id,
        },
    )
    log.info("account connected", extra={"provider": ZOOM, "account_id": row.id})
    return row


# Disconnecting -------------------------------------------------------------------------------


async def _revoke_refresh(services: Services, row: ConnectedAccount, token: str) -> None:
    """Withdraw a Google refresh token (best effort: a failure is logged, not raised)."""
    try:
        credential = await app_credential(services, row.provider, row.tenant_id)
        http = provider_registry(services).http(row.provider)
        document = await oauth.oidc_discovery(
            http, _issuer(services.settings, credential), guard=credential.guard_url
        )
        url = document.get("revocation_endpoint") or "https://oauth2.googleapis.com/revoke"
        await oauth.revoke_token(http, str(url), token, guard=credential.guard_url)
    except (ProviderError, GatewayError) as exc:
        log.warning("revoking a grant failed", extra={"provider": row.provider, "error": str(exc)})


async def _revoke(services: Services, row: ConnectedAccount) -> None:
    if row.provider == GOOGLE_CALENDAR:
        await _revoke_refresh(services, row, _decrypt(services.settings, row.refresh_token))
        return
    token = _decrypt(services.settings, row.access_token)
    if not token:
        return
    try:
        credential = await app_credential(services, ZOOM, row.tenant_id)
        await zoom.revoke(provider_registry(services).http(ZOOM), zoom_app(credential), token)
    except (ProviderError, GatewayError) as exc:
        log.warning("revoking a grant failed", extra={"provider": ZOOM, "error": str(exc)})


@operation("connections:own")
async def disconnect_account(ctx: Context, account_id: int) -> ConnectedAccount:
    """Revoke the grant at the provider and forget the account (the organization's:
    OWNER only; a member's own: that member only). Zoom's app credential goes too."""
    row = await visible_account(ctx, account_id)
    if row.slot == TENANT_SLOT:
        await confirm(ctx, "connections:tenant")
    await _revoke(ctx.services, row)
    await ConnectedAccount.filter(id=row.id).delete()
    if row.provider == ZOOM:
        try:
            await remove_credential(ctx, CredentialScope.TENANT, ZOOM)
        except NotFound:
            pass
    log.info("account disconnected", extra={"provider": row.provider, "account_id": row.id})
    return row
