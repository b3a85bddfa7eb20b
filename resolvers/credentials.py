"""Provider credentials: storing them encrypted, and the one resolution chain.

Every caller of a third party asks `resolve_credential(ctx, provider)`, which walks
the chain user's own key → tenant's key → system key from settings → the sandbox
and says which link answered. Decrypted values live in this process's memory only:
for `CREDENTIAL_CACHE_SECONDS` (a burst of calls by one caller costs one store read;
setting or removing a credential through this process drops the entries at once,
through another process they answer within that bound), or, when that is 0, in a
per-request DataLoader cache. Nothing here ever returns a stored secret to an API caller: lists show
the provider, scope, the names of the fields set, the last four characters of the
main secret, when and by whom.

A URL in a stored credential (`baseUrl`, `endpointUrl`) is the tenant's or user's
choice, so it goes through the outbound guard (`kit/ssrf.py`): checked with a lookup
when saved (BAD_USER_INPUT on the field), and flagged `guard_url` on the resolved
credential so the provider layer dials it only through the guard. The gateway's own
sandboxes (`PUBLIC_URL/sandbox/...`) are the operator's, as are system base URLs from
settings: those are trusted. `ResolvedCredential.own` tells the provider layer that
failures are this credential's alone (its breaker, not the provider's).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, NotFound, UpstreamUnavailable
from kit.phones import e164
from kit.roles import allowed
from kit.settings import Settings
from kit.ssrf import UnsafeDestination, check_destination, check_host, normalise
from kit.text import EMAIL_RE
from kit.ttl_cache import read_through
from kit.vault import VaultError, vault_for
from models.credentials import TENANT_SLOT, Credential, user_slot
from models.tenancy import scoped
from providers import (
    imap,
    notion,
    openai,
    paypal,
    resend,
    rossum,
    sendgrid,
    stripe,
    twilio,
    zoom,
)
from providers.errors import ProviderError
from providers.registry import has_client
from providers.sandbox import has_sandbox
from resolvers.context import Context
from resolvers.operations import operation
from resolvers.pagination import Order, Page, page_of
from resolvers.upstream import provider_registry

log = logging.getLogger("switchboard.credentials")


class IntegrationProvider(StrEnum):
    OPENAI = "openai"
    RESEND = "resend"
    SENDGRID = "sendgrid"
    SMTP = "smtp"
    IMAP = "imap"
    S3 = "s3"
    ROSSUM = "rossum"
    STRIPE = "stripe"
    PAYPAL = "paypal"
    TWILIO = "twilio"
    ZOOM = "zoom"
    GOOGLE_CALENDAR = "google_calendar"
    NOTION = "notion"


class CredentialSource(StrEnum):
    USER = "USER"
    TENANT = "TENANT"
    SYSTEM = "SYSTEM"
    SANDBOX = "SANDBOX"


class CredentialScope(StrEnum):
    TENANT = "TENANT"
    USER = "USER"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str  # snake_case; the API spells it camelCase
    required: bool = True
    secret: bool = True


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    fields: tuple[FieldSpec, ...]
    primary: str  # the secret whose last four characters are shown

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


def _opt(name: str) -> FieldSpec:
    return FieldSpec(name, required=False, secret=False)


def _plain(name: str) -> FieldSpec:
    return FieldSpec(name, required=True, secret=False)


_KEY = FieldSpec("api_key")
PROVIDERS: dict[IntegrationProvider, ProviderSpec] = {
    IntegrationProvider.OPENAI: ProviderSpec(
        (_KEY, _opt("organization"), _opt("base_url")), "api_key"
    ),
    IntegrationProvider.RESEND: ProviderSpec(
        (_KEY, _opt("base_url"), _opt("from_email")), "api_key"
    ),
    # from_email: the verified sender identity the key's mail goes out from (SendGrid
    # refuses any other).
    IntegrationProvider.SENDGRID: ProviderSpec(
        (_KEY, _opt("from_email"), _opt("base_url")), "api_key"
    ),
    IntegrationProvider.SMTP: ProviderSpec(
        (
            _plain("host"),
            _opt("port"),
            _opt("username"),
            FieldSpec("password", required=False),
            _opt("security"),
            _opt("from_email"),
        ),
        "password",
    ),
    IntegrationProvider.IMAP: ProviderSpec(
        (
            _plain("host"),
            _opt("port"),
            _plain("user"),
            FieldSpec("password"),
            _opt("security"),
        ),
        "password",
    ),
    IntegrationProvider.S3: ProviderSpec(
        (
            _plain("access_key_id"),
            FieldSpec("secret_access_key"),
            _opt("bucket"),
            _opt("region"),
            _opt("endpoint_url"),
        ),
        "secret_access_key",
    ),
    # A static API token, or a user's login (exchanged for tokens by the client); the
    # queue documents go to. One of the two is required (`_check_alternatives`).
    IntegrationProvider.ROSSUM: ProviderSpec(
        (
            FieldSpec("api_token", required=False),
            FieldSpec("username", required=False, secret=False),
            FieldSpec("password", required=False),
            _opt("queue_id"),
            _opt("base_url"),
        ),
        "api_token",
    ),
    IntegrationProvider.STRIPE: ProviderSpec(
        (FieldSpec("secret_key"), FieldSpec("webhook_secret", required=False), _opt("base_url")),
        "secret_key",
    ),
    IntegrationProvider.PAYPAL: ProviderSpec(
        (
            _plain("client_id"),
            FieldSpec("client_secret"),
            _opt("webhook_id"),
            _opt("base_url"),
        ),
        "client_secret",
    ),
    # The auth token (it also verifies Twilio's signed callbacks) or an API key pair for
    # the REST calls (`_check_twilio`); the senders: an SMS number, a WhatsApp number, a
    # Messaging Service (at least one); where Twilio posts the status of each message (the
    # organization's `twilio` webhook source URL: its callbacks are signed with its token).
    IntegrationProvider.TWILIO: ProviderSpec(
        (
            _plain("account_sid"),
            FieldSpec("auth_token", required=False),
            _opt("api_key_sid"),
            FieldSpec("api_key_secret", required=False),
            _opt("phone_number"),
            _opt("whatsapp_number"),
            _opt("messaging_service_sid"),
            _opt("verification_content_sid"),
            _opt("status_callback_url"),
            _opt("base_url"),
        ),
        "auth_token",
    ),
    IntegrationProvider.ZOOM: ProviderSpec(
        (_plain("account_id"), _plain("client_id"), FieldSpec("client_secret"), _opt("base_url")),
        "client_secret",
    ),
    IntegrationProvider.GOOGLE_CALENDAR: ProviderSpec(
        (
            _plain("client_id"),
            FieldSpec("client_secret"),
            FieldSpec("refresh_token", required=False),
            _opt("base_url"),
        ),
        "client_secret",
    ),
    IntegrationProvider.NOTION: ProviderSpec((_KEY, _opt("base_url")), "api_key"),
}

MAX_FIELD_LENGTH = 4096
SMTP_SECURITY = ("auto", "starttls", "tls", "none")
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9-]{1,63}\.?$|^\[?[0-9A-Fa-f:.]+\]?$"
)
_URL_FIELDS = {"base_url", "endpoint_url"}
# Providers whose client speaks a protocol other than HTTP, off the shared outbound layer
# (no breaker, no health row: a mailbox or relay is optional, and its area reports its
# state — the mail chain in sentEmails, the mailbox in `mailboxes`):
# their credentials are accepted, and their `host` goes through the outbound guard.
OTHER_CLIENTS = frozenset({IntegrationProvider.IMAP, IntegrationProvider.SMTP})
DEFAULT_PORTS = {IntegrationProvider.IMAP: imap.DEFAULT_PORT, IntegrationProvider.SMTP: 587}
IMAP_SECURITY = ("tls", "starttls", "none")


def _security_choices(provider: IntegrationProvider) -> tuple[str, ...]:
    return IMAP_SECURITY if provider is IntegrationProvider.IMAP else SMTP_SECURITY


_FIELD_NAME_RE = re.compile(r"^[A-Za-z]{1,30}$")


@dataclass(frozen=True)
class ResolvedCredential:
    """The credential a call to `provider` uses, and where it came from.

    `repr` never shows the secrets, so a stray log line cannot leak them.
    """

    provider: str
    source: CredentialSource
    secrets: dict[str, str] = field(repr=False)
    base_url: str | None = None
    guard_url: bool = False  # base_url is tenant- or user-set: dial it through the guard

    @property
    def is_sandbox(self) -> bool:
        return self.source is CredentialSource.SANDBOX

    @property
    def own(self) -> bool:
        """A tenant's or user's own credential: its failures are its own (its breaker)."""
        return self.source in (CredentialSource.USER, CredentialSource.TENANT)


# -- the vendor's cheap check of a credential ---------------------------------------------

# provider -> async check(ctx, credential): the provider module's `verify_key` (one cheap
# authenticated call to the vendor as `credential`, through the module's own client). It
# returns when the vendor accepted the credential and raises ProviderError (or
# TimeoutError) otherwise. One table, used twice: on save (`verify`: refused ->
# BAD_USER_INPUT, unreachable -> stored unverified) and by the background health probe
# with the system credential (resolvers/health.py). Providers without a cheap check have
# no entry: stored unverified, never probed.
KeyCheck = Callable[[Context, ResolvedCredential], Awaitable[None]]
VERIFY_TIMEOUT = 8.0  # seconds a save (or a probe) waits for the vendor
LABEL_PURPOSE = "purpose"
PURPOSE_VERIFY = "verify_credential"


async def _verify_openai(ctx: Context, credential: ResolvedCredential) -> None:
    cred = openai.OpenAICredential.of(
        credential.secrets, credential.base_url, own=credential.own, guarded=credential.guard_url
    )
    await openai.verify_key(provider_registry(ctx.services).openai(), cred)


def _verify_labels(ctx: Context, credential: ResolvedCredential) -> dict[str, str]:
    labels = {
        "request_id": ctx.request_id,
        "credential_source": credential.source.value,
        LABEL_PURPOSE: PURPOSE_VERIFY,
    }
    if ctx.principal is not None:
        labels["tenant_id"] = str(ctx.principal.tenant_id)
    return labels


async def _verify_resend(ctx: Context, credential: ResolvedCredential) -> None:
    client = resend.ResendClient(
        provider_registry(ctx.services).http(resend.PROVIDER),
        credential.secrets["api_key"],
        base_url=credential.base_url or resend.API_URL,
        labels=_verify_labels(ctx, credential),
        own_credential=credential.own,
        guard_url=credential.guard_url,
    )
    await resend.verify_key(client)


async def _verify_sendgrid(ctx: Context, credential: ResolvedCredential) -> None:
    client = sendgrid.SendGridClient(
        provider_registry(ctx.services).http(sendgrid.PROVIDER),
        credential.secrets["api_key"],
        base_url=credential.base_url or sendgrid.API_URL,
        labels=_verify_labels(ctx, credential),
        own_credential=credential.own,
        guard_url=credential.guard_url,
    )
    await sendgrid.verify_key(client)


def call_labels(
    ctx: Context, credential: ResolvedCredential | None = None, tenant_id: int | None = None
) -> dict[str, str]:
    """Labels a provider client carries so its failures land in the caller's error log
    (`resolvers/integrations.py`): the request, the credential's source, the tenant (the
    caller's unless `tenant_id` names the one background work is for)."""
    labels: dict[str, str] = {"request_id": ctx.request_id}
    if credential is not None:
        labels["credential_source"] = credential.source.value
    tenant = tenant_id if tenant_id is not None else (ctx.principal and ctx.principal.tenant_id)
    if tenant:
        labels["tenant_id"] = str(tenant)
    return labels


def rossum_client(ctx: Context, credential: ResolvedCredential) -> rossum.RossumClient:
    """A Rossum client for a resolved credential (its token or login, queue and base
    URL), on the app's shared layer and login-token cache."""
    registry = provider_registry(ctx.services)
    labels = call_labels(ctx, credential)
    return rossum.RossumClient(
        registry.http(rossum.PROVIDER),
        registry.rossum_tokens(),
        rossum.RossumCredential.of(credential.secrets, credential.base_url),
        labels=labels,
        own_credential=credential.own,
        guard_url=credential.guard_url,
    )


async def _verify_rossum(ctx: Context, credential: ResolvedCredential) -> None:
    client = rossum_client(ctx, credential)
    client.labels.update(_verify_labels(ctx, credential))
    await rossum.verify_key(client)


async def _verify_stripe(ctx: Context, credential: ResolvedCredential) -> None:
    client = (
        provider_registry(ctx.services)
        .stripe()
        .client(
            credential.secrets["secret_key"],
            base_url=credential.base_url or stripe.API_URL,
            own_credential=credential.own,
            guard_url=credential.guard_url,
            labels=_verify_labels(ctx, credential),
        )
    )
    await stripe.verify_key(client)


def twilio_client(
    ctx: Context, credential: ResolvedCredential, tenant_id: int | None = None
) -> twilio.TwilioClient:
    """A Twilio client for a resolved credential, on the app's shared layer."""
    labels = call_labels(ctx, credential, tenant_id)
    return twilio.TwilioClient(
        provider_registry(ctx.services).http(twilio.PROVIDER),
        twilio.TwilioCredential.of(credential.secrets),
        base_url=credential.base_url or twilio.API_URL,
        labels=labels,
        own_credential=credential.own,
        guard_url=credential.guard_url,
    )


async def _verify_twilio(ctx: Context, credential: ResolvedCredential) -> None:
    client = twilio_client(ctx, credential)
    client.labels.update(_verify_labels(ctx, credential))
    await twilio.verify_key(client)


def paypal_client(
    ctx: Context, credential: ResolvedCredential, tenant_id: int | None = None
) -> paypal.PayPalClient:
    """A PayPal client for a resolved credential, on the app's shared layer and token cache."""
    registry = provider_registry(ctx.services)
    labels = call_labels(ctx, credential, tenant_id)
    return paypal.PayPalClient(
        registry.http(paypal.PROVIDER),
        registry.paypal_tokens(),
        paypal.PayPalCredential.of(credential.secrets),
        base_url=credential.base_url or paypal.API_URL,
        labels=labels,
        own_credential=credential.own,
        guard_url=credential.guard_url,
    )


async def _verify_paypal(ctx: Context, credential: ResolvedCredential) -> None:
    client = paypal_client(ctx, credential)
    client.labels.update(_verify_labels(ctx, credential))
    await paypal.verify_key(client)


async def _verify_notion(ctx: Context, credential: ResolvedCredential) -> None:
    client = (
        provider_registry(ctx.services)
        .notion()
        .client(
            credential.secrets["api_key"],
            base_url=credential.base_url or notion.API_URL,
            own_credential=credential.own,
            guard_url=credential.guard_url,
            labels=_verify_labels(ctx, credential),
        )
    )
    await notion.verify_key(client)


async def _verify_imap(ctx: Context, credential: ResolvedCredential) -> None:
    values = credential.secrets
    port = int(values.get("port") or imap.DEFAULT_PORT)
    dial = None
    if credential.own:  # a tenant's host: dial only the address the guard checked
        try:
            [dial, *_] = await check_host(values["host"], port, ctx.settings.outbound_policy())
        except UnsafeDestination as exc:
            raise exc.for_field("secrets.host") from None
    await imap.verify_key(
        imap.ImapConfig(
            host=values["host"],
            port=port,
            user=values.get("user", ""),
            password=values.get("password", ""),
            security=values.get("security", "tls"),  # type: ignore[arg-type]
            timeout=VERIFY_TIMEOUT,
            # the CA the polls trust (a private CA's or a self-signed certificate)
            tls_context=ssl.create_default_context(cafile=ctx.settings.imap_ca_file)
            if ctx.settings.imap_ca_file
            else None,
            dial=dial,
        )
    )


async def _verify_zoom(ctx: Context, credential: ResolvedCredential) -> None:
    app = zoom.ZoomApp.of(credential.secrets, credential.base_url, guard=credential.guard_url)
    await zoom.verify_key(provider_registry(ctx.services).http(zoom.PROVIDER), app)


KEY_CHECKS: dict[IntegrationProvider, KeyCheck] = {
    IntegrationProvider.OPENAI: _verify_openai,
    IntegrationProvider.RESEND: _verify_resend,
    IntegrationProvider.SENDGRID: _verify_sendgrid,
    IntegrationProvider.IMAP: _verify_imap,
    IntegrationProvider.ROSSUM: _verify_rossum,
    IntegrationProvider.STRIPE: _verify_stripe,
    IntegrationProvider.TWILIO: _verify_twilio,
    IntegrationProvider.PAYPAL: _verify_paypal,
    IntegrationProvider.ZOOM: _verify_zoom,
    IntegrationProvider.NOTION: _verify_notion,
}


def refused(error: ProviderError) -> bool:
    """The vendor said no to the credential itself (as opposed to: could not be asked)."""
    return bool(error.is_auth_error or error.status in (400, 422))


async def verify(ctx: Context, kind: IntegrationProvider, credential: ResolvedCredential) -> bool:
    """Run the provider's key check on a credential being saved: True when the vendor
    accepted it, BAD_USER_INPUT naming the main secret when it refused it, False when it
    could not be asked in time (stored unverified)."""
    check = KEY_CHECKS.get(kind)
    if check is None:
        return False
    try:
        await asyncio.wait_for(check(ctx, credential), VERIFY_TIMEOUT)
    except ProviderError as err:
        if refused(err):
            name = f"secrets.{camel(PROVIDERS[kind].primary)}"
            raise BadUserInput(
                f"{kind.value} refused the credential.",
                details={name: f"was refused by {kind.value} ({err.vendor_code or err.status})"},
            ) from None
        log.warning("%s credential not verified: vendor unreachable", kind.value)
        return False
    except TimeoutError:
        log.warning("%s credential not verified: no answer in time", kind.value)
        return False
    return True


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def parse_provider(value: str | IntegrationProvider) -> IntegrationProvider:
    try:
        return IntegrationProvider(str(value).lower())
    except ValueError:
        raise BadUserInput(
            "Unknown provider.", details={"provider": "is not a supported provider"}
        ) from None


def providers_with_client() -> list[IntegrationProvider]:
    """The providers the gateway can call today (`providers.registry.CLIENTS`), in the
    enum's order: health lists these, and credentials are accepted for these only."""
    return [p for p in IntegrationProvider if has_client(p.value)]


def refuse_without_client(kind: IntegrationProvider) -> None:
    """A credential for a vendor the gateway has no client for would be stored and never
    used: refuse it (the enum names vendors still to come)."""
    if not has_client(kind.value) and kind not in OTHER_CLIENTS:
        raise BadUserInput(
            f"{kind.value} is not available yet: this gateway has no client for it.",
            details={"provider": f"{kind.value} has no client in this gateway yet"},
        )


def clean_secrets(provider: IntegrationProvider, raw: Any, *, production: bool) -> dict[str, str]:
    """The provider's fields from `raw` (camelCase keys), checked; errors never echo values."""
    spec = PROVIDERS[provider]
    if not isinstance(raw, dict):
        raise BadUserInput(
            "secrets must be an object.", details={"secrets": "must be an object of fields"}
        )
    problems: dict[str, str] = {}
    values: dict[str, str] = {}
    for key, value in raw.items():
        name = _snake(str(key))
        where = f"secrets.{camel(name)}"
        spec_field = spec.field(name)
        if spec_field is None:
            known = ", ".join(camel(f.name) for f in spec.fields)
            # Name the field only when it looks like a field name: a pasted secret used
            # as a key (digits, symbols) must not come back in the answer.
            shown = str(key) if _FIELD_NAME_RE.match(str(key)) else "(unknown field)"
            problems[f"secrets.{shown}"] = f"is not a {provider.value} field (one of {known})"
            continue
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            problems[where] = "must be a string"
            continue
        text = str(value).strip()
        if len(text) > MAX_FIELD_LENGTH:
            problems[where] = f"is longer than {MAX_FIELD_LENGTH} characters"
        elif any(ord(c) < 32 for c in text):
            problems[where] = "contains control characters"
        elif name in _URL_FIELDS and not _valid_url(text, production=production):
            problems[where] = "must be an https:// URL" if production else "must be an http(s) URL"
        elif name == "port" and not (text.isdigit() and 1 <= int(text) <= 65535):
            problems[where] = "must be a port number"
        elif name == "host" and not _HOST_RE.match(text):
            problems[where] = "must be a host name or IP address"
        elif name == "security" and text not in (choices := _security_choices(provider)):
            problems[where] = f"must be one of {', '.join(choices)}"
        elif name == "from_email" and not EMAIL_RE.match(text):
            problems[where] = "must be an email address"
        elif text:
            values[name] = text
    for spec_field in spec.fields:
        where = f"secrets.{camel(spec_field.name)}"
        if spec_field.required and spec_field.name not in values and where not in problems:
            problems[where] = "is required"
    if provider is IntegrationProvider.ROSSUM and not problems:
        _check_rossum_auth(values, problems)
    if provider is IntegrationProvider.TWILIO and not problems:
        _check_twilio(values, problems, production=production)
    if problems:
        raise BadUserInput("Invalid credential.", details=problems)
    return values


def _check_rossum_auth(values: dict[str, str], problems: dict[str, str]) -> None:
    """Rossum takes an API token, or a username and password: one of the two, whole."""
    login = [name for name in ("username", "password") if name in values]
    if "api_token" in values:
        if login:
            problems["secrets.apiToken"] = "give an API token or a username and password, not both"
    elif len(login) < 2:
        missing = "password" if "username" in values else "username"
        problems[f"secrets.{missing}"] = "is required (or an apiToken)"


_TWILIO_SIDS = {
    "account_sid": re.compile(r"^AC[0-9a-fA-F]{32}$"),
    "api_key_sid": re.compile(r"^SK[0-9a-fA-F]{32}$"),
    "messaging_service_sid": re.compile(r"^MG[0-9a-fA-F]{32}$"),
    "verification_content_sid": re.compile(r"^HX[0-9a-fA-F]{32}$"),
}


def _check_twilio(values: dict[str, str], problems: dict[str, str], *, production: bool) -> None:
    """Twilio: SIDs of the right kind, an auth token or a whole API key pair, E.164
    senders, and at least one sender."""
    for name, pattern in _TWILIO_SIDS.items():
        if name in values and not pattern.match(values[name]):
            problems[f"secrets.{camel(name)}"] = f"must be a Twilio SID ({pattern.pattern[2:4]}…)"
    pair = [n for n in ("api_key_sid", "api_key_secret") if n in values]
    if len(pair) == 1:
        missing = "apiKeySecret" if "api_key_sid" in values else "apiKeySid"
        problems[f"secrets.{missing}"] = "is required with an API key"
    if "auth_token" not in values and not pair:
        problems["secrets.authToken"] = "is required (or an apiKeySid and apiKeySecret)"
    for name in ("phone_number", "whatsapp_number"):
        if name in values:
            try:
                values[name] = e164(values[name], f"secrets.{camel(name)}")
            except BadUserInput as exc:
                problems.update(exc.details)
    callback = values.get("status_callback_url")
    if callback is not None and not _valid_url(callback, production=production):
        problems["secrets.statusCallbackUrl"] = "must be an http(s) URL (its webhook source's)"
    if not {"phone_number", "whatsapp_number", "messaging_service_sid"} & values.keys():
        problems["secrets.phoneNumber"] = (
            "is required (or a whatsappNumber or messagingServiceSid): the sender"
        )


def _valid_url(text: str, *, production: bool) -> bool:
    schemes = ("https://",) if production else ("https://", "http://")
    return text.startswith(schemes) and len(text) > 10 and " " not in text


def is_own_sandbox(settings: Settings, url: str) -> bool:
    """Whether `url` is one of this gateway's sandboxes (PUBLIC_URL/sandbox/...), as the
    client will read it (dot segments resolved): operator-run, so not guarded."""
    try:
        target, base = normalise(url), normalise(settings.base_url)
    except UnsafeDestination:
        return False
    return target.origin() == base.origin() and target.path.startswith(
        base.path.rstrip("/") + "/sandbox/"
    )


async def check_urls(
    settings: Settings, values: dict[str, str], kind: IntegrationProvider | None = None
) -> None:
    """The outbound guard on every URL field of a credential being saved (and on the
    `host` of a non-HTTP provider's): BAD_USER_INPUT naming the field when its address
    (after the lookup) is refused."""
    policy = settings.outbound_policy()
    if kind in OTHER_CLIENTS and "host" in values:
        port = int(values.get("port") or DEFAULT_PORTS.get(kind, 0) or 1)
        try:
            await check_host(values["host"], port, policy)
        except UnsafeDestination as exc:
            raise exc.for_field("secrets.host") from None
    for name in sorted(_URL_FIELDS & values.keys()):
        url = values[name]
        if is_own_sandbox(settings, url):
            continue
        try:
            await check_destination(url, policy)
        except UnsafeDestination as exc:
            raise exc.for_field(f"secrets.{camel(name)}") from None


def hint_for(provider: IntegrationProvider, values: dict[str, str]) -> str:
    """The last four characters of the main secret, only when it is long enough to hide."""
    secret = values.get(PROVIDERS[provider].primary, "")
    return secret[-4:] if len(secret) >= 12 else ""


# -- the resolution chain -----------------------------------------------------------------

_LOADER = "credentials:resolve"


# Fields a sandbox credential carries besides its key: the Rossum sandbox takes any
# numeric queue id, so documents go to queue 1.
SANDBOX_EXTRAS: dict[str, dict[str, str]] = {
    "rossum": {"queue_id": "1"},
    "paypal": {"client_id": "sandbox-paypal-client"},
    "google_calendar": {"client_id": "switchboard-sandbox"},
    "zoom": {"account_id": "sandbox-account", "client_id": "switchboard-sandbox"},
    "twilio": {
        "account_sid": "AC" + "5a" * 16,
        "phone_number": "+15005550006",  # Twilio's test sender
        "whatsapp_number": "+15005550006",
        # The sandbox's approved `verification_code` template (providers/sandbox/twilio.py).
        "verification_content_sid": "HX"
        + hashlib.md5(b"verification_code", usedforsecurity=False).hexdigest(),
    },
}


def sandbox_secret(settings: Settings, provider: str) -> str:
    """The main secret of `provider`'s sandbox credential. Twilio signs its callbacks with
    the account's auth token, and the system address accepts what the sandbox signs: that
    token is derived from the first vault key (the same in every process of one
    installation, unknown to anyone without the vault key), not a constant."""
    if provider == "twilio":
        key = settings.vault_keys[0].encode()
        return hmac.new(key, b"switchboard sandbox: twilio auth token", "sha256").hexdigest()
    return f"sandbox-{provider}-key"


def sandbox_base_url(ctx: Context, provider: str) -> str:
    return f"{ctx.settings.base_url}/sandbox/{provider}"


def _decrypt(ctx: Context, row: Credential) -> dict[str, str]:
    try:
        data = json.loads(vault_for(ctx.settings.vault_keys).decrypt(row.ciphertext))
    except (VaultError, ValueError):
        log.error(
            "stored credential cannot be decrypted; was a VAULT_KEYS key removed too early?",
            extra={"provider": row.provider, "credential_id": row.id},
        )
        raise UpstreamUnavailable(
            f"The stored {row.provider} credential cannot be read; ask an operator.",
            provider=row.provider,
        ) from None
    return {str(k): str(v) for k, v in data.items()}


def _resolved(
    settings: Settings, provider: str, source: CredentialSource, values: dict[str, str]
) -> ResolvedCredential:
    base_url = values.get("base_url") or None
    own = source in (CredentialSource.USER, CredentialSource.TENANT)
    guard = bool(own and base_url and not is_own_sandbox(settings, base_url))
    return ResolvedCredential(provider, source, dict(values), base_url, guard)


async def _resolve_many(ctx: Context, providers: list[str]) -> list[Any]:
    principal = ctx.principal
    rows: dict[tuple[str, str], Credential] = {}
    user_slot_name: str | None = None
    if principal is not None:
        slots = [TENANT_SLOT]
        # A person's own key applies to their sessions, not to the tenant's API keys.
        if principal.user_id is not None and principal.api_key_id is None:
            user_slot_name = user_slot(principal.user_id)
            slots.append(user_slot_name)
        found = await scoped(Credential, principal.tenant_id).filter(
            provider__in=providers, slot__in=slots
        )
        rows = {(r.provider, r.slot): r for r in found}
    answers: list[Any] = []
    for provider in providers:
        try:
            answers.append(_chain(ctx, provider, rows, user_slot_name))
        except Exception as exc:  # handed to the waiting caller by the DataLoader
            answers.append(exc)
    return answers


def system_credential(settings: Settings, provider: str) -> ResolvedCredential | None:
    """The operator's credential for `provider` from settings, None when not set."""
    values = settings.system_credentials(provider)
    return _resolved(settings, provider, CredentialSource.SYSTEM, values) if values else None


def _chain(
    ctx: Context,
    provider: str,
    rows: dict[tuple[str, str], Credential],
    user_slot_name: str | None,
) -> ResolvedCredential:
    if user_slot_name and (row := rows.get((provider, user_slot_name))) is not None:
        return _resolved(ctx.settings, provider, CredentialSource.USER, _decrypt(ctx, row))
    if (row := rows.get((provider, TENANT_SLOT))) is not None:
        return _resolved(ctx.settings, provider, CredentialSource.TENANT, _decrypt(ctx, row))
    system = system_credential(ctx.settings, provider)
    if system is not None:
        return system
    if ctx.settings.sandboxes_enabled and has_sandbox(provider):
        return ResolvedCredential(
            provider,
            CredentialSource.SANDBOX,
            {
                PROVIDERS[IntegrationProvider(provider)].primary: sandbox_secret(
                    ctx.settings, provider
                ),
                **SANDBOX_EXTRAS.get(provider, {}),
            },
            sandbox_base_url(ctx, provider),
        )
    raise UpstreamUnavailable(f"{provider} is not configured.", provider=provider)


def resolve_operator_credential(
    ctx: Context, provider: str | IntegrationProvider
) -> ResolvedCredential:
    """The operator's own credential (settings → sandbox), never a tenant's: what the
    gateway's own business uses (the SaaS's billing in the operator's Stripe account)."""
    return _chain(ctx, parse_provider(provider).value, {}, None)


async def resolve_tenant_credential(
    ctx: Context, provider: str | IntegrationProvider, tenant_id: int
) -> ResolvedCredential:
    """The credential background work for `tenant_id` uses (no person behind it): the
    tenant's → system → sandbox, else UPSTREAM_UNAVAILABLE "not configured"."""
    name = parse_provider(provider).value
    found = await scoped(Credential, tenant_id).filter(provider=name, slot=TENANT_SLOT)
    return _chain(ctx, name, {(r.provider, r.slot): r for r in found}, None)


async def resolve_credential(
    ctx: Context, provider: str | IntegrationProvider
) -> ResolvedCredential:
    """The credential for `provider`: user's → tenant's → system → sandbox, else
    UPSTREAM_UNAVAILABLE "not configured". Answered from this process's memory for
    CREDENTIAL_CACHE_SECONDS (concurrent misses share one store read), or (0) cached for
    the rest of this request."""
    name = parse_provider(provider).value
    ttl = ctx.settings.credential_cache_seconds
    principal = ctx.principal
    if ttl <= 0 or principal is None:
        loader = ctx.loader(_LOADER, functools.partial(_resolve_many, ctx))
        result: ResolvedCredential = await loader.load(name)
        return result
    personal = principal.user_id if principal.api_key_id is None else None

    async def load() -> ResolvedCredential:
        [answer] = await _resolve_many(ctx, [name])
        if isinstance(answer, Exception):
            raise answer  # not configured, undecryptable: asked again next time
        return answer  # type: ignore[no-any-return]

    key = (principal.tenant_id, personal, name)
    resolved = await read_through(ctx.services.credential_cache, key, ttl, load)
    assert resolved is not None  # load() answers or raises
    return resolved


def _forget(ctx: Context, provider: str) -> None:
    loader = ctx.known_loader(_LOADER)
    if loader is not None:
        loader.clear(provider)
    tenant_id = ctx.tenant_id
    ctx.services.credential_cache.forget_where(
        lambda key: key[0] == tenant_id and key[2] == provider
    )


# -- set, remove, list --------------------------------------------------------------------


@dataclass
class SetResult:
    credential: Credential
    verified: bool


def _slot_for(ctx: Context, scope: CredentialScope) -> tuple[str, int | None]:
    principal = ctx.require_principal()
    if scope is CredentialScope.TENANT:
        return TENANT_SLOT, None
    if principal.user_id is None or principal.api_key_id is not None:
        raise BadUserInput(
            "API keys have no personal credentials; set a tenant credential instead.",
            details={"scope": "personal credentials belong to signed-in users"},
        )
    return user_slot(principal.user_id), principal.user_id


async def set_credential(
    ctx: Context, scope: CredentialScope, provider: str | IntegrationProvider, secrets: Any
) -> SetResult:
    principal = ctx.require(SCOPE_PERMISSION[scope])
    kind = parse_provider(provider)
    refuse_without_client(kind)
    slot, user_id = _slot_for(ctx, scope)
    values = clean_secrets(kind, secrets, production=ctx.settings.is_production)
    await check_urls(ctx.settings, values, kind)

    source = CredentialSource.USER if scope is CredentialScope.USER else CredentialSource.TENANT
    verified = await verify(ctx, kind, _resolved(ctx.settings, kind.value, source, values))

    token = vault_for(ctx.settings.vault_keys).encrypt(json.dumps(values, sort_keys=True))
    hint = hint_for(kind, values)
    names = ",".join(sorted(values))
    row = await _upsert(
        principal.tenant_id, kind.value, slot, user_id, token, hint, names, principal.user_id
    )
    _forget(ctx, kind.value)
    log.info(
        "credential set",
        extra={"provider": kind.value, "scope": scope.value, "verified": verified},
    )
    return SetResult(row, verified)


async def _upsert(
    tenant_id: int,
    provider: str,
    slot: str,
    user_id: int | None,
    token: str,
    hint: str,
    names: str,
    set_by_id: int | None,
) -> Credential:
    for attempt in range(2):
        try:
            async with in_transaction():
                row = (
                    await scoped(Credential, tenant_id)
                    .filter(provider=provider, slot=slot)
                    .select_for_update()
                    .first()
                )
                if row is None:
                    return await Credential.create(
                        tenant_id=tenant_id,
                        provider=provider,
                        slot=slot,
                        user_id=user_id,
                        ciphertext=token,
                        hint=hint,
                        field_names=names,
                        set_by_id=set_by_id,
                    )
                row.ciphertext, row.hint, row.set_by_id = token, hint, set_by_id
                row.field_names = names
                await row.save(
                    update_fields=["ciphertext", "hint", "field_names", "set_by_id", "updated_at"]
                )
                return row
        except IntegrityError:
            if attempt:  # a concurrent first save won twice in a row: give up cleanly
                raise
    raise AssertionError("unreachable")


async def remove_credential(
    ctx: Context, scope: CredentialScope, provider: str | IntegrationProvider
) -> IntegrationProvider:
    ctx.require(SCOPE_PERMISSION[scope])
    kind = parse_provider(provider)
    slot, _ = _slot_for(ctx, scope)
    deleted = (
        await scoped(Credential, ctx.tenant_id).filter(provider=kind.value, slot=slot).delete()
    )
    if not deleted:
        raise NotFound(f"No {scope.value.lower()} credential for {kind.value} is set.")
    _forget(ctx, kind.value)
    log.info("credential removed", extra={"provider": kind.value, "scope": scope.value})
    return kind


async def list_credentials(
    ctx: Context, scope: CredentialScope, *, first: int | None, after: str | None
) -> Page[Credential]:
    ctx.require(SCOPE_PERMISSION[scope])
    slot, _ = _slot_for(ctx, scope)
    query = scoped(Credential, ctx.tenant_id).filter(slot=slot)
    return await page_of(ctx, query, first=first, after=after, order=Order("id"))


# The operations, one per scope: the organization's credentials (credentials:tenant) and
# a member's own (credentials:own); the functions above serve both.
SCOPE_PERMISSION = {
    CredentialScope.TENANT: "credentials:tenant",
    CredentialScope.USER: "credentials:own",
}


@operation("credentials:tenant")
async def list_tenant_credentials(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[Credential]:
    return await list_credentials(ctx, CredentialScope.TENANT, first=first, after=after)


@operation("credentials:own")
async def list_my_credentials(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[Credential]:
    return await list_credentials(ctx, CredentialScope.USER, first=first, after=after)


@operation("credentials:tenant")
async def set_tenant_credential(
    ctx: Context, provider: str | IntegrationProvider, secrets: Any
) -> SetResult:
    return await set_credential(ctx, CredentialScope.TENANT, provider, secrets)


@operation("credentials:own")
async def set_my_credential(
    ctx: Context, provider: str | IntegrationProvider, secrets: Any
) -> SetResult:
    return await set_credential(ctx, CredentialScope.USER, provider, secrets)


@operation("credentials:tenant")
async def remove_tenant_credential(
    ctx: Context, provider: str | IntegrationProvider
) -> IntegrationProvider:
    return await remove_credential(ctx, CredentialScope.TENANT, provider)


@operation("credentials:own")
async def remove_my_credential(
    ctx: Context, provider: str | IntegrationProvider
) -> IntegrationProvider:
    return await remove_credential(ctx, CredentialScope.USER, provider)


async def load_nodes(ctx: Context, ids: list[str]) -> list[Credential | None]:
    """`node(id:)` lookups: a tenant credential for credentials:tenant holders, a personal
    one only for its owner."""
    principal = ctx.require_principal()
    numeric = [int(i) if str(i).isdigit() else None for i in ids]
    wanted = [i for i in numeric if i is not None]
    rows = {r.id: r for r in await scoped(Credential, principal.tenant_id).filter(id__in=wanted)}

    def visible(row: Credential | None) -> bool:
        if row is None:
            return False
        if row.slot == TENANT_SLOT:
            return allowed(principal.role, "credentials:tenant")
        return principal.api_key_id is None and row.slot == user_slot(principal.user_id or 0)

    out: list[Credential | None] = []
    for i in numeric:
        row = rows.get(i) if i is not None else None
        out.append(row if visible(row) else None)
    return out


def field_names(row: Credential) -> list[str]:
    """Which fields a stored credential has (names only, camelCase), for lists."""
    return [camel(n) for n in row.field_names.split(",") if n]


def scope_of(row: Credential) -> CredentialScope:
    return CredentialScope.TENANT if row.slot == TENANT_SLOT else CredentialScope.USER


# -- vault key rotation -------------------------------------------------------------------


@dataclass
class RotationReport:
    rotated: int = 0  # re-encrypted under the newest key
    current: int = 0  # already under the newest key
    unreadable: list[str] = field(default_factory=list)  # "Model#id" no key could decrypt


async def rotate_vault(vault_keys: list[str], *, batch_size: int = 200) -> RotationReport:
    """Re-encrypt every stored vault token under the newest key, one transaction per batch.

    Rows no configured key can decrypt are left untouched and reported.
    """
    from models.credentials import VAULT_COLUMNS

    vault = vault_for(vault_keys)
    report = RotationReport()
    for model, column in VAULT_COLUMNS:
        last_id = 0
        while True:
            async with in_transaction():
                rows = (
                    await model.filter(id__gt=last_id)
                    .order_by("id")
                    .limit(batch_size)
                    .select_for_update()
                )
                for row in rows:
                    token = getattr(row, column)
                    if not token:
                        continue  # no secret in this column (a connection without one)
                    if vault.is_current(token):
                        report.current += 1
                        continue
                    try:
                        setattr(row, column, vault.rotate(token))
                    except VaultError:
                        report.unreadable.append(f"{model.__name__}#{row.pk}")
                        continue
                    await row.save(update_fields=[column])
                    report.rotated += 1
            if len(rows) < batch_size:
                break
            last_id = rows[-1].pk
    return report
