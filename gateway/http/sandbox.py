"""Provider sandboxes served by the gateway itself, under /sandbox/<provider>.

Only when sandboxes are enabled (outside production by default, SANDBOX_ENABLED
to force either way): a provider without credentials resolves to its sandbox's
URL here (`{PUBLIC_URL}/sandbox/<provider>`), so development works with no keys
and the real client code still speaks HTTP. The emulators are listed in
providers/sandbox/__init__.py; each instance is kept in
`services.sandboxes` (tests reach their state there).

Delivery webhooks (SANDBOX_WEBHOOKS, on by default): the mail sandboxes post the events
the vendor would send after each send, signed the vendor's way, to this gateway's own
`{PUBLIC_URL}/webhooks/resend` and `/webhooks/sendgrid`, so the embedded default shows
real delivery states; the Twilio sandbox posts each message's signed status callbacks to
the `StatusCallback` the send names (`/webhooks/twilio`) and its injected incoming
messages to `/webhooks/twilio`, `TWILIO_SANDBOX_STEP_SECONDS` apart, signed with the
sandbox account's auth token (derived from the vault key); the Stripe sandbox posts its
events to `/webhooks/stripe`, signed with STRIPE_WEBHOOK_SECRET (or
`WEBHOOK_SYSTEM_SECRETS["stripe"]`) when set, else derived; the PayPal sandbox posts its
events to `/webhooks/paypal`, signed (with its own key, whose certificate it serves) for
PAYPAL_WEBHOOK_ID when set, else for a derived webhook id; the Rossum sandbox calls
`/webhooks/rossum` (its hook) whenever an annotation changes status, signed with
`WEBHOOK_SYSTEM_SECRETS["rossum"]` when set, else with a derived secret, and walks
annotations `ROSSUM_SANDBOX_STEP_SECONDS` apart; the Zoom sandbox posts `meeting.started`,
`meeting.ended` and `recording.completed` to `/webhooks/zoom` as its meetings are driven
(its `/_sandbox/meetings/{id}/…` controls), signed with ZOOM_WEBHOOK_SECRET_TOKEN when set,
else with a derived secret token. Resend's are signed with
`WEBHOOK_SYSTEM_SECRETS["resend"]` when set; otherwise, and always for SendGrid (whose
key pair the vendor holds), with a key derived from the first vault key: every process
of one installation derives the same, and nobody without the vault key can.
`services.sandbox_webhook_secrets` tells the webhook route which key to accept besides
the system secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging

from cryptography.hazmat.primitives.asymmetric import ec
from starlette.routing import BaseRoute, Mount

from kit.settings import Settings
from providers.sandbox import SANDBOXES, create_sandbox, sandbox_path
from providers.sandbox.paypal import PayPalSandbox
from providers.sandbox.resend import ResendSandbox
from providers.sandbox.rossum import RossumSandbox
from providers.sandbox.sendgrid import SendGridSandbox
from providers.sandbox.stripe import StripeSandbox
from providers.sandbox.twilio import TwilioSandbox
from providers.sandbox.zoom import ZoomSandbox
from resolvers.context import Services
from resolvers.credentials import sandbox_secret

log = logging.getLogger("switchboard.sandbox")

# The order of the P-256 group: a private key is an integer in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def routes(services: Services) -> list[BaseRoute]:
    if not services.settings.sandboxes_enabled:
        return []
    instances = services.sandboxes
    mounted: list[BaseRoute] = []
    for provider in SANDBOXES:
        app = instances.get(provider)
        if app is None:
            app = instances[provider] = create_sandbox(provider)
        mounted.append(Mount(sandbox_path(provider), app=app))
    if services.settings.sandbox_webhooks:
        configure_webhooks(services)
    log.info("sandboxes mounted", extra={"providers": sorted(instances)})
    return mounted


def _derived(settings: Settings, label: str) -> bytes:
    key = settings.vault_keys[0].encode()
    return hmac.new(key, f"switchboard sandbox webhooks: {label}".encode(), "sha256").digest()


def sandbox_resend_secret(settings: Settings) -> str:
    """The `whsec_` secret the Resend sandbox signs with: the system one, else derived."""
    configured = settings.webhook_system_secrets.get("resend")
    if configured:
        return configured
    return "whsec_" + base64.b64encode(_derived(settings, "resend")).decode()


def sandbox_rossum_secret(settings: Settings) -> str:
    """The hook secret the Rossum sandbox signs with: the system one, else derived."""
    configured = settings.webhook_system_secrets.get("rossum")
    if configured:
        return configured
    return _derived(settings, "rossum").hex()


def sandbox_stripe_secret(settings: Settings) -> str:
    """The `whsec_` secret the Stripe sandbox signs with: STRIPE_WEBHOOK_SECRET (or the
    system one), else derived."""
    configured = settings.system_webhook_secret("stripe")
    if configured:
        return configured
    return "whsec_" + _derived(settings, "stripe").hex()


def sandbox_paypal_webhook_id(settings: Settings) -> str:
    """The webhook id the PayPal sandbox signs its events for: PAYPAL_WEBHOOK_ID (or the
    system one), else derived."""
    return settings.system_webhook_secret("paypal") or (
        "WH-SANDBOX-" + _derived(settings, "paypal").hex()[:24].upper()
    )


def sandbox_zoom_secret(settings: Settings) -> str:
    """The secret token the Zoom sandbox signs with: ZOOM_WEBHOOK_SECRET_TOKEN (or the
    system one), else derived."""
    configured = settings.system_webhook_secret("zoom")
    if configured:
        return configured
    return _derived(settings, "zoom").hex()[:32]


def sandbox_sendgrid_key(settings: Settings) -> ec.EllipticCurvePrivateKey:
    """The P-256 key the SendGrid sandbox signs its Event Webhook with (derived)."""
    seed = hashlib.sha512(_derived(settings, "sendgrid")).digest()  # 512 bits: no bias
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def configure_webhooks(services: Services) -> None:
    """Point the mounted sandboxes' callbacks at this gateway's webhook routes."""
    settings = services.settings
    base = settings.base_url
    resend = services.sandboxes.get("resend")
    if isinstance(resend, ResendSandbox):
        secret = sandbox_resend_secret(settings)
        resend.configure_webhooks(f"{base}/webhooks/resend", secret)
        services.sandbox_webhook_secrets["resend"] = secret
    sendgrid = services.sandboxes.get("sendgrid")
    if isinstance(sendgrid, SendGridSandbox):
        sendgrid.configure_webhooks(
            f"{base}/webhooks/sendgrid", signing_key=sandbox_sendgrid_key(settings)
        )
        services.sandbox_webhook_secrets["sendgrid"] = sendgrid.public_key
    stripe = services.sandboxes.get("stripe")
    if isinstance(stripe, StripeSandbox):
        secret = sandbox_stripe_secret(settings)
        stripe.configure_webhooks(f"{base}/webhooks/stripe", secret)
        services.sandbox_webhook_secrets["stripe"] = secret
    paypal = services.sandboxes.get("paypal")
    if isinstance(paypal, PayPalSandbox):
        webhook_id = sandbox_paypal_webhook_id(settings)
        paypal.configure_webhooks(f"{base}/webhooks/paypal", webhook_id)
        services.sandbox_webhook_secrets["paypal"] = webhook_id
    rossum = services.sandboxes.get("rossum")
    if isinstance(rossum, RossumSandbox):
        secret = sandbox_rossum_secret(settings)
        rossum.configure_hooks(
            f"{base}/webhooks/rossum",
            secret,
            step_seconds=settings.rossum_sandbox_step_seconds,
        )
        services.sandbox_webhook_secrets["rossum"] = secret
    zoom = services.sandboxes.get("zoom")
    if isinstance(zoom, ZoomSandbox):
        secret = sandbox_zoom_secret(settings)
        zoom.configure_webhooks(f"{base}/webhooks/zoom", secret)
        services.sandbox_webhook_secrets["zoom"] = secret
    twilio = services.sandboxes.get("twilio")
    if isinstance(twilio, TwilioSandbox):
        # Status callbacks go where each send says (only under this gateway's webhooks),
        # incoming messages to /webhooks/twilio, signed with the sandbox account's auth
        # token (derived from the vault key), which the system address accepts.
        twilio.configure(
            callbacks=f"{base}/webhooks/",
            inbound=f"{base}/webhooks/twilio",
            step=settings.twilio_sandbox_step_seconds,
        )
        services.sandbox_webhook_secrets["twilio"] = sandbox_secret(settings, "twilio")


async def aclose(services: Services) -> None:
    """Stop the sandboxes' background work (callbacks in flight): the app's shutdown."""
    for app in services.sandboxes.values():
        close = getattr(app, "aclose", None)
        if close is not None:
            await close()
