"""Settings from the environment (and an optional `.env`), validated at start-up.

A bad value stops the process with a message that names the setting.
"""

from __future__ import annotations

import re
import secrets
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from kit.ssrf import Policy
    from kit.storage_url import StorageLocation

STORAGE_DEFAULT = "file://data/storage"
DEV_SIGNING_KEY = "dev:insecure-development-signing-key-change-me"
DEV_VAULT_KEY = "ZGV2LWluc2VjdXJlLXZhdWx0LWtleS0zMi1ieXRlcyE="  # base64 of a 32-byte dev key


DEFAULT_AI_PRICES_PER_MILLION: dict[str, Decimal] = {
    "gpt-4o-mini:input": Decimal("0.15"),
    "gpt-4o-mini:output": Decimal("0.60"),
    "gpt-4o:input": Decimal("2.50"),
    "gpt-4o:output": Decimal("10.00"),
    "gpt-4.1-mini:input": Decimal("0.40"),
    "gpt-4.1-mini:output": Decimal("1.60"),
    "gpt-4.1:input": Decimal("2.00"),
    "gpt-4.1:output": Decimal("8.00"),
    "gpt-3.5-turbo:input": Decimal("0.50"),
    "gpt-3.5-turbo:output": Decimal("1.50"),
    "default:input": Decimal("2.50"),
    "default:output": Decimal("10.00"),
}


class BillingPlan(BaseModel):
    """One plan of the SaaS's own billing (BILLING_PLANS): what a tenant on it may use."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    title: str = Field(min_length=1, max_length=80)
    # The Stripe price a subscription to it is for; none for the free plan.
    stripe_price: str | None = Field(None, pattern=r"^price_[A-Za-z0-9_]{1,200}$")
    ai_monthly_tokens: int = Field(ge=0)
    requests_per_hour: int = Field(ge=1)


DEFAULT_BILLING_PLANS: tuple[BillingPlan, ...] = (
    BillingPlan(
        name="free", title="Free", stripe_price=None, ai_monthly_tokens=2_000_000,
        requests_per_hour=1000,
    ),
    # The Stripe sandbox knows these two prices (providers/sandbox/stripe.py).
    BillingPlan(
        name="pro", title="Pro", stripe_price="price_switchboard_pro",
        ai_monthly_tokens=20_000_000, requests_per_hour=10_000,
    ),
    BillingPlan(
        name="business", title="Business", stripe_price="price_switchboard_business",
        ai_monthly_tokens=100_000_000, requests_per_hour=50_000,
    ),
)  # fmt: skip


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SettingsError(RuntimeError):
    """Raised at start-up when a setting is invalid; the message names it."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting the gateway reads. Env names are the upper-case field names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    switchboard_env: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str = ""  # how the outside world reaches us; defaults to http://host:port
    # The front end that mail links open (verify, reset, accept an invitation); defaults to
    # public_url.
    frontend_url: str = Field("", validation_alias=AliasChoices("frontend_url", "app_url"))

    database_url: str = "sqlite://data/switchboard.sqlite3"
    redis_url: str = ""
    redis_key_prefix: str = Field("switchboard", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Where file objects live: file://<dir> (local disk, relative to the working
    # directory; the embedded default) or s3://<bucket>?endpoint=…&region=…&path_style=true
    # (any S3-compatible store; keys from S3_ACCESS_KEY_ID / DO_ACCESS_KEY_ID…). When it is
    # left at the default and S3_BUCKET (DO_BUCKET) is set, that bucket is used.
    storage_url: str = STORAGE_DEFAULT
    # The key the local backend signs its download and upload URLs with (default: derived
    # from the first vault key). S3 signs its own with the access key.
    storage_signing_key: SecretStr | None = None
    # The largest multipart GraphQL request (all files of one request together) and the
    # largest body of a presigned PUT to the local backend.
    max_upload_request_bytes: int = Field(10 * 16 * 1024 * 1024 + 1024 * 1024, ge=1024)

    # Signing keys as "kid:secret" pairs; the first signs, all verify (rotation).
    jwt_signing_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEV_SIGNING_KEY]
    )
    jwt_issuer: str = "switchboard"
    access_token_ttl_seconds: int = Field(900, ge=30)
    refresh_token_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    email_token_ttl_seconds: int = Field(24 * 3600, ge=60)
    password_reset_ttl_seconds: int = Field(3600, ge=60)
    invitation_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    # How long a member's current role may be taken from this process's memory on each
    # request; changes drop it at once in every process through the event bus, so this
    # only bounds a lost bus message (0: read the store on every request).
    authz_cache_seconds: float = Field(30.0, ge=0, le=300)
    # How long `me` may answer the viewer's user/organization profile from memory (0: never).
    viewer_cache_seconds: float = Field(5.0, ge=0, le=60)
    # Whole answers of queries whose fields all carry a cache hint (`me`), per caller, kept
    # at most VIEWER_CACHE_SECONDS; how many per process (0: no response cache).
    response_cache_entries: int = Field(10_000, ge=0, le=1_000_000)

    # Secret vault keys (Fernet, url-safe base64 of 32 bytes); the first encrypts.
    vault_keys: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [DEV_VAULT_KEY])

    # Rate limits in the `limits` library's notation.
    rate_limit_authenticated: str = "1000/hour"
    rate_limit_anonymous: str = "100/hour"
    rate_limit_webhooks: str = "10000/hour"
    login_attempts_per_account: str = "10/15minutes"
    login_attempts_per_address: str = "50/15minutes"
    rate_limit_enabled: bool = True

    # GraphQL limits
    max_query_depth: int = Field(12, ge=2)
    max_query_tokens: int = Field(4000, ge=100)
    max_aliases: int = Field(30, ge=1)
    max_query_fragments: int = Field(100, ge=1)
    # What one operation may make the gateway materialise (schema/limits.py: objects,
    # multiplied by page sizes, vendor calls weighted).
    max_query_cost: int = Field(5_000, ge=10)
    max_page_size: int = Field(100, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    # A request body must arrive whole within this many seconds (408 beyond).
    body_read_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    graphiql: bool | None = None  # default: on outside production
    # Who may ask for the schema: public | authenticated | off (default: authenticated in
    # production, where tools use an API key; public elsewhere).
    introspection: Literal["public", "authenticated", "off"] | None = None
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    log_level: str = "INFO"
    log_json: bool = True
    gc_freeze: bool = True

    sandbox_enabled: bool | None = None  # default: on outside production
    # The mounted mail sandboxes post the vendors' signed delivery webhooks (Resend's,
    # SendGrid's Event Webhook) to this gateway's /webhooks/<provider> after each send.
    sandbox_webhooks: bool = True
    # Outbound rate limit per provider and credential, `limits` notation (JSON object),
    # e.g. {"resend": "2/second"}; overrides the provider module's default.
    outbound_rate_limits: dict[str, str] = Field(default_factory=dict)
    metrics_token: SecretStr | None = None  # bearer token for /metrics off loopback
    # Every process probes each provider whose system credential is set with one cheap
    # authenticated call this often (seconds; 0: never); health reports the last outcome.
    health_probe_seconds: float = Field(60.0, ge=0)

    # System credentials per provider: used when neither the user nor the tenant set
    # one (the chain is user -> tenant -> system -> sandbox). See `system_credentials`.
    openai_api_key: SecretStr | None = None
    openai_organization: str = ""
    openai_base_url: str = ""
    resend_api_key: SecretStr | None = None
    resend_base_url: str = ""  # another Resend-compatible endpoint (e.g. the sandbox)
    sendgrid_api_key: SecretStr | None = None
    # The verified sender identity SendGrid mail goes out from (SendGrid refuses others).
    sendgrid_from_email: str = ""
    # SMTP, the mail fallback after Resend (the product documents' EMAIL_* names work too).
    smtp_host: str = Field("", validation_alias=AliasChoices("smtp_host", "email_host"))
    smtp_port: int = Field(
        587, ge=1, le=65535, validation_alias=AliasChoices("smtp_port", "email_port")
    )
    smtp_username: str = Field("", validation_alias=AliasChoices("smtp_username", "email_username"))
    smtp_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("smtp_password", "email_password")
    )
    # auto: implicit TLS on port 465, else STARTTLS when the server offers it (plain for a
    # local relay that does not); starttls: require it; tls: implicit TLS; none: plain.
    smtp_security: Literal["auto", "starttls", "tls", "none"] = "auto"
    smtp_timeout_seconds: float = Field(20.0, gt=0)
    smtp_ca_file: str = ""  # PEM file of the CA to trust for SMTP TLS (default: system roots)
    # The sender of every mail the gateway sends (a name and an address).
    email_from: str = Field(
        "Switchboard <no-reply@switchboard.localhost>",
        validation_alias=AliasChoices("email_from", "mail_from"),
    )
    # IMAP, the system mailbox invoices are read from (resolvers/mailbox.py). Its mail
    # belongs to the organization whose slug is IMAP_TENANT (required with IMAP_HOST).
    imap_host: str = ""
    imap_port: int = Field(993, ge=1, le=65535)
    imap_user: str = Field("", validation_alias=AliasChoices("imap_user", "imap_username"))
    imap_password: SecretStr | None = None
    # tls: implicit TLS (993); starttls: required; none: plain (a server on this machine)
    imap_security: Literal["tls", "starttls", "none"] = "tls"
    imap_ca_file: str = ""  # PEM file of the CA to trust for IMAP TLS (default: system roots)
    imap_tenant: str = ""  # the slug of the organization the system mailbox's mail is for
    # Each mailbox (the system's and every organization's) is read this often, at most
    # every 15 s (the period of the job that reads them).
    imap_poll_seconds: float = Field(60.0, ge=1)
    imap_timeout_seconds: float = Field(30.0, gt=0)  # connect, and each IMAP command
    # The largest PDF taken from a message (the product's PDF limit); larger ones are
    # refused and reported. A message over four times this is not downloaded at all.
    imap_max_attachment_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # S3-compatible object storage (the product documents' DO_* names work too).
    s3_access_key_id: str = Field(
        "", validation_alias=AliasChoices("s3_access_key_id", "do_access_key_id")
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("s3_secret_access_key", "do_access_key_secret")
    )
    s3_region: str = Field("", validation_alias=AliasChoices("s3_region", "do_region"))
    s3_endpoint_url: str = Field(
        "", validation_alias=AliasChoices("s3_endpoint_url", "s3_endpoint", "do_endpoint")
    )
    s3_bucket: str = Field("", validation_alias=AliasChoices("s3_bucket", "do_bucket"))
    s3_path_style: bool = False  # path-style addressing (MinIO, most self-hosted stores)
    # Rossum (invoice OCR): a static API token, or a user's login (ROSSUM_USER and
    # ROSSUM_PASS, the product documents' names) exchanged for a token as needed; the
    # queue documents are uploaded to; the API's base URL (ROSSUM_API_URL).
    rossum_api_token: SecretStr | None = None
    rossum_base_url: str = Field(
        "", validation_alias=AliasChoices("rossum_base_url", "rossum_api_url")
    )
    rossum_queue_id: str = ""
    rossum_username: str = Field(
        "", validation_alias=AliasChoices("rossum_username", "rossum_user")
    )
    rossum_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("rossum_password", "rossum_pass")
    )
    # Sign-in with Google (OpenID Connect) and GitHub (OAuth): the product documents' names.
    # Without a client id, and with sandboxes on, the gateway's own emulators sign people in.
    google_client_id: str = Field(
        "", validation_alias=AliasChoices("google_client_id", "google_id")
    )
    google_client_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("google_client_secret", "google_secret")
    )
    google_issuer: str = "https://accounts.google.com"  # discovery at /.well-known/...
    github_client_id: str = Field(
        "", validation_alias=AliasChoices("github_client_id", "github_id")
    )
    github_client_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("github_client_secret", "github_secret")
    )
    github_base_url: str = "https://github.com"  # authorize and token endpoints
    github_api_url: str = "https://api.github.com"
    # How long a sign-in may take at the provider, and the one-time code's life after it.
    oauth_flow_seconds: int = Field(600, ge=30, le=3600)
    login_code_seconds: int = Field(60, ge=5, le=600)
    # The gateway's own Rossum sandbox moves an annotation one state this often (seconds).
    rossum_sandbox_step_seconds: float = Field(0.5, ge=0, le=60)
    # Invoices: after a submit, Rossum's hook normally tells when an annotation moves on;
    # with no hook within this many seconds a poll asks (and again at this interval).
    invoice_poll_seconds: float = Field(30.0, gt=0, le=3600)
    # An annotation still unfinished this long after its submit fails the invoice.
    invoice_give_up_seconds: float = Field(86400.0, gt=0)
    # Stripe: the operator's secret key (payments of organizations without their own, and
    # the SaaS's own billing) and the signing secret of its webhook endpoint
    # (`/webhooks/stripe`; organizations with their own account get an endpoint of their
    # own with createWebhookSource).
    stripe_secret_key: SecretStr | None = None
    stripe_base_url: str = ""  # another Stripe-compatible endpoint (e.g. a sandbox)
    stripe_webhook_secret: SecretStr | None = Field(None, repr=False)
    # PayPal: the operator's REST app (client id and secret), its endpoint (the live API;
    # https://api-m.sandbox.paypal.com for PayPal's own sandbox), and the id of its webhook
    # at PayPal (`/webhooks/paypal`): PayPal signs each event for one webhook id.
    paypal_client_id: str = ""
    paypal_client_secret: SecretStr | None = None
    paypal_base_url: str = ""
    paypal_webhook_id: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    # Twilio (SMS, WhatsApp): the account, its auth token (it also verifies Twilio's signed
    # callbacks) or an API key pair (SK…) for the REST calls, the senders (an E.164 number,
    # a WhatsApp-enabled number, or a Messaging Service), another endpoint (e.g. a sandbox).
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr | None = None
    twilio_api_key_sid: str = Field(
        "", validation_alias=AliasChoices("twilio_api_key_sid", "twilio_api_key")
    )
    twilio_api_key_secret: SecretStr | None = None
    twilio_phone_number: str = ""
    twilio_whatsapp_number: str = ""
    twilio_messaging_service_sid: str = ""
    # The approved WhatsApp template verification codes are sent with ({{1}}: the code).
    twilio_verification_content_sid: str = Field("", pattern=r"^(HX[0-9a-fA-F]{32})?$")
    twilio_base_url: str = ""
    # Incoming messages to the operator's (shared) numbers belong to the organization that
    # last wrote to the sender; a sender nobody wrote to goes to the organization with this
    # slug (none: such a message is recorded as ignored).
    twilio_inbound_tenant: str = ""
    # The gateway's own Twilio sandbox moves a message one status this often (seconds).
    twilio_sandbox_step_seconds: float = Field(0.2, ge=0, le=60)
    # Verification codes (sendVerificationCode / checkVerificationCode).
    verification_code_ttl_seconds: int = Field(600, ge=60, le=3600)
    verification_max_attempts: int = Field(5, ge=1, le=20)
    verification_resend_cooldown_seconds: int = Field(60, ge=0, le=3600)
    verification_sends_per_number: str = "5/hour"
    verification_sends_per_address: str = "20/hour"
    verification_checks_per_address: str = "60/hour"
    zoom_account_id: str = ""
    zoom_client_id: str = ""
    zoom_client_secret: SecretStr | None = None
    # The Zoom app's Secret Token: Zoom signs its event notifications to /webhooks/zoom with it.
    zoom_webhook_secret_token: SecretStr | None = Field(None, repr=False)
    notion_api_key: SecretStr | None = None
    # Where users' Notion connections are called: empty = api.notion.com, or the gateway's
    # own Notion sandbox while sandboxes are on (development, tests).
    notion_base_url: str = ""
    run_worker: bool = True
    # Jobs and events (gateway/worker.py): a claimed job's lease (renewed while it runs;
    # a dead worker's job is taken again after it), how often idle workers and the
    # outbox relay look for work, jobs run at once per process, shutdown grace.
    job_lease_seconds: float = Field(30.0, ge=0.5)
    job_poll_seconds: float = Field(1.0, gt=0)
    worker_concurrency: int = Field(4, ge=1)
    database_pool_size: int = Field(20, ge=2, le=500)
    worker_shutdown_grace_seconds: float = Field(10.0, ge=0)
    outbox_poll_seconds: float = Field(1.0, gt=0)
    job_retention_days: int = Field(14, ge=1)  # succeeded jobs, published events
    ai_monthly_token_quota: int = Field(2_000_000, ge=0)
    # The SaaS's own billing: its plans (a JSON list of {name, title, stripePrice,
    # aiMonthlyTokens, requestsPerHour}; the first without a price is where a tenant with
    # no subscription is), paid through the operator's Stripe account.
    billing_plans: tuple[BillingPlan, ...] = DEFAULT_BILLING_PLANS
    # USD per million tokens, "<model>:input" / "<model>:output" ("<model>" alone prices
    # both); models without an entry use "default:input" / "default:output".
    ai_prices_per_million: dict[str, Decimal] = Field(
        default_factory=lambda: dict(DEFAULT_AI_PRICES_PER_MILLION)
    )
    ai_default_model: str = "gpt-4o-mini"
    ai_max_output_tokens: int = Field(4096, ge=1)
    # Outbound limits per OpenAI key (shared by every process through Redis when set).
    openai_max_concurrent_requests: int = Field(50, ge=1)
    openai_requests_per_minute: int = Field(100, ge=1)
    # A streamed answer sends at most one subscription event per window (the first delta
    # and the last event at once); deltas arriving within it go out together.
    ai_stream_coalesce_ms: float = Field(50.0, ge=0, le=1000)
    # How long a resolved provider credential may answer from this process's memory (0:
    # per request only). Changes through this process apply at once, others within it.
    credential_cache_seconds: float = Field(5.0, ge=0, le=60)
    # All of a process's AI streams together send about this many events per second at
    # most: with many streams, each one's window widens past AI_STREAM_COALESCE_MS (0: never).
    ai_stream_max_events_per_second: int = Field(3000, ge=0)

    # Webhooks: incoming body cap; system-level inbound secrets per provider (JSON object,
    # used by /webhooks/{provider} without an endpoint token: sandbox and tests); hosts or
    # CIDRs outgoing deliveries may reach despite the SSRF guard; https (default: production);
    # how long an endpoint may fail without a success before it is disabled.
    webhook_max_body_bytes: int = Field(256 * 1024, ge=1024)
    webhook_system_secrets: dict[str, str] = Field(default_factory=dict, repr=False)
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_require_https: bool | None = None
    # Hosts or CIDRs every tenant- or user-set URL (webhook endpoints, credentials' base
    # URLs) may reach despite the outbound guard; WEBHOOK_ALLOWED_HOSTS counts too (its
    # older name). Empty by default, in production too: private targets only by choice.
    outbound_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_disable_after_seconds: int = Field(5 * 24 * 3600, ge=60)
    # Seconds before each retry of an outgoing webhook (Svix's schedule: at once, 5 s,
    # 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), each with ±20 % jitter; comma-separated.
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )

    @field_validator("webhook_allowed_hosts", "outbound_allowed_hosts", mode="before")
    @classmethod
    def _split_webhook_hosts(cls, value: Any) -> Any:
        return _split_csv(value)

    _split = field_validator(
        "jwt_signing_keys",
        "vault_keys",
        "allowed_origins",
        "trusted_proxies",
        "webhook_retry_schedule",
        mode="before",
    )(_split_csv)

    @field_validator("billing_plans")
    @classmethod
    def _plans(cls, value: tuple[BillingPlan, ...]) -> tuple[BillingPlan, ...]:
        names = [p.name for p in value]
        prices = [p.stripe_price for p in value if p.stripe_price]
        if len(set(names)) != len(names) or len(set(prices)) != len(prices):
            raise ValueError("plan names and Stripe prices must be unique")
        if not any(p.stripe_price is None for p in value):
            raise ValueError("one plan must have no price: the free plan")
        return value

    @property
    def free_plan(self) -> BillingPlan:
        """Where a tenant without a subscription is: the first plan without a price."""
        return next(p for p in self.billing_plans if p.stripe_price is None)

    def plan_named(self, name: str | None) -> BillingPlan | None:
        return next((p for p in self.billing_plans if p.name == name), None)

    def plan_for_price(self, price: str | None) -> BillingPlan | None:
        if not price:
            return None
        return next((p for p in self.billing_plans if p.stripe_price == price), None)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if not value or any(step < 0 for step in value):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE: one or more non-negative numbers")
        return value

    @field_validator("jwt_signing_keys")
    @classmethod
    def _check_signing_keys(cls, keys: list[str]) -> list[str]:
        if not keys:
            raise ValueError("at least one signing key is required")
        seen: set[str] = set()
        for key in keys:
            kid, sep, secret = key.partition(":")
            if not sep or not kid or not secret:
                raise ValueError("each key must look like 'kid:secret'")
            if kid in seen:
                raise ValueError(f"key id {kid!r} appears twice")
            seen.add(kid)
        return keys

    @field_validator("vault_keys")
    @classmethod
    def _check_vault_keys(cls, keys: list[str]) -> list[str]:
        from kit.vault import check_key

        if not keys:
            raise ValueError("at least one vault key is required")
        for key in keys:
            check_key(key)
        return keys

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if scheme not in {"sqlite", "postgres", "postgresql", "asyncpg", "psycopg"}:
            raise ValueError("must start with sqlite:// or postgres://")
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        from kit.storage_url import parse_storage_url

        parse_storage_url(value)  # raises ValueError naming what is wrong
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_s3_endpoint(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s):// URL, e.g. https://fra1.digitaloceanspaces.com")
        return value

    @field_validator("twilio_phone_number", "twilio_whatsapp_number")
    @classmethod
    def _check_phone(cls, value: str) -> str:
        if not value:
            return value
        from kit.phones import e164

        try:
            return e164(value)
        except Exception:
            raise ValueError("must be a phone number in E.164 form, e.g. +14155550123") from None

    @model_validator(mode="after")
    def _imap_tenant_with_host(self) -> Settings:
        if self.imap_host and not self.imap_tenant:
            raise ValueError(
                "IMAP_TENANT: the slug of the organization that the mail of IMAP_HOST's "
                "mailbox is for is required when IMAP_HOST is set"
            )
        return self

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.switchboard_env is Environment.PRODUCTION:
            for key in self.jwt_signing_keys:
                secret = key.partition(":")[2]
                if key == DEV_SIGNING_KEY or len(secret) < 32:
                    raise ValueError(
                        "JWT_SIGNING_KEYS: production needs its own signing key "
                        "(kid:secret, secret of 32+ characters), not the development default"
                    )
            if DEV_VAULT_KEY in self.vault_keys:
                raise ValueError("VAULT_KEYS: production needs its own vault key, not the default")
        return self

    # Derived values -------------------------------------------------------

    @property
    def is_production(self) -> bool:
        return self.switchboard_env is Environment.PRODUCTION

    @property
    def graphiql_enabled(self) -> bool:
        return (not self.is_production) if self.graphiql is None else self.graphiql

    @property
    def introspection_policy(self) -> str:
        if self.introspection is not None:
            return self.introspection
        return "authenticated" if self.is_production else "public"

    @property
    def sandboxes_enabled(self) -> bool:
        return (not self.is_production) if self.sandbox_enabled is None else self.sandbox_enabled

    def outbound_policy(self) -> Policy:
        """The outbound guard's policy for tenant- and user-set URLs (kit/ssrf.py)."""
        from kit.ssrf import Policy

        https = self.webhook_require_https
        if https is None:
            https = self.is_production
        return Policy.build(
            [*self.outbound_allowed_hosts, *self.webhook_allowed_hosts], require_https=https
        )

    def storage_location(self) -> StorageLocation:
        """Where file objects live (STORAGE_URL, or the S3_*/DO_* settings)."""
        from kit.storage_url import StorageLocation, parse_storage_url

        location = parse_storage_url(self.storage_url)
        if location.kind == "file" and self.s3_bucket and self.storage_url == STORAGE_DEFAULT:
            location = StorageLocation(kind="s3", bucket=self.s3_bucket)
        if location.kind == "s3":
            location = location.with_defaults(
                endpoint=self.s3_endpoint_url,
                region=self.s3_region,
                path_style=self.s3_path_style,
            )
        return location

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @property
    def app_url(self) -> str:
        """Where the front end is: mail links point there."""
        return self.frontend_url.rstrip("/") or self.base_url

    def system_webhook_secret(self, provider: str) -> str | None:
        """The secret `/webhooks/{provider}` verifies with: WEBHOOK_SYSTEM_SECRETS, else
        the vendor's own setting (STRIPE_WEBHOOK_SECRET, ZOOM_WEBHOOK_SECRET_TOKEN)."""
        configured = self.webhook_system_secrets.get(provider)
        if configured:
            return configured
        if provider == "stripe" and self.stripe_webhook_secret is not None:
            return self.stripe_webhook_secret.get_secret_value() or None
        if provider == "paypal":
            return self.paypal_webhook_id or None
        if provider == "zoom" and self.zoom_webhook_secret_token is not None:
            return self.zoom_webhook_secret_token.get_secret_value() or None
        return None

    def system_credentials(self, provider: str) -> dict[str, str] | None:
        """The operator's credential for `provider` from settings; None when not configured.

        Keys are the provider's credential field names (as in setTenantCredential).
        """
        fields = _SYSTEM_CREDENTIALS.get(provider, {})
        values: dict[str, str] = {}
        for name, attr in fields.items():
            raw = getattr(self, attr)
            value = raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw or "")
            if value:
                values[name] = value
        required = _SYSTEM_ANY_OF.get(provider) or tuple(fields)[:1]
        return values if any(name in values for name in required) else None

    def signing_secret_of(self, provider: str) -> str | None:
        """The secret a vendor signs its webhooks to the system address with, when it is
        one of the vendor's credentials (Twilio: the account's auth token)."""
        if provider == "twilio" and self.twilio_auth_token is not None:
            return self.twilio_auth_token.get_secret_value() or None
        return None

    @property
    def signing_keys(self) -> list[tuple[str, str]]:
        """(kid, secret) pairs; the first one signs new tokens."""
        return [tuple(k.split(":", 1)) for k in self.jwt_signing_keys]  # type: ignore[misc]


# provider -> {credential field -> settings attribute}; the first field is the one
# that must be set for the system credential to count as configured (or, for the
# providers in `_SYSTEM_ANY_OF`, one of those).
_SYSTEM_CREDENTIALS: dict[str, dict[str, str]] = {
    "openai": {
        "api_key": "openai_api_key",
        "organization": "openai_organization",
        "base_url": "openai_base_url",
    },
    "resend": {"api_key": "resend_api_key", "base_url": "resend_base_url"},
    "sendgrid": {"api_key": "sendgrid_api_key", "from_email": "sendgrid_from_email"},
    "smtp": {
        "host": "smtp_host",
        "port": "smtp_port",
        "username": "smtp_username",
        "password": "smtp_password",
    },
    "s3": {
        "access_key_id": "s3_access_key_id",
        "secret_access_key": "s3_secret_access_key",
        "region": "s3_region",
        "endpoint_url": "s3_endpoint_url",
    },
    "rossum": {
        "api_token": "rossum_api_token",
        "username": "rossum_username",
        "password": "rossum_password",
        "queue_id": "rossum_queue_id",
        "base_url": "rossum_base_url",
    },
    "stripe": {"secret_key": "stripe_secret_key", "base_url": "stripe_base_url"},
    "paypal": {
        "client_id": "paypal_client_id",
        "client_secret": "paypal_client_secret",
        "base_url": "paypal_base_url",
    },
    "twilio": {
        "account_sid": "twilio_account_sid",
        "auth_token": "twilio_auth_token",
        "api_key_sid": "twilio_api_key_sid",
        "api_key_secret": "twilio_api_key_secret",
        "phone_number": "twilio_phone_number",
        "whatsapp_number": "twilio_whatsapp_number",
        "messaging_service_sid": "twilio_messaging_service_sid",
        "verification_content_sid": "twilio_verification_content_sid",
        "base_url": "twilio_base_url",
    },
    "zoom": {
        "account_id": "zoom_account_id",
        "client_id": "zoom_client_id",
        "client_secret": "zoom_client_secret",
    },
    "google_calendar": {
        "client_id": "google_client_id",
        "client_secret": "google_client_secret",
    },
    "notion": {"api_key": "notion_api_key"},
}


# Providers whose system credential counts as configured when any one of these is set
# (instead of the first field): Rossum takes a token or a user's login.
_SYSTEM_ANY_OF: dict[str, tuple[str, ...]] = {"rossum": ("api_token", "username")}


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "SETTINGS"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def generate_signing_key() -> str:
    return f"k{secrets.token_hex(3)}:{secrets.token_urlsafe(48)}"
