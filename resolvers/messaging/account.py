"""Which Twilio account a tenant's messages go through, and from which senders.

The credential chain (resolvers/credentials.py) for background work: the tenant's own
Twilio account (`setTenantCredential`, encrypted) → the operator's (TWILIO_*) → the
gateway's Twilio sandbox (development and tests). A message's sender is the account's
Messaging Service when it has one, else its SMS number (TWILIO_PHONE_NUMBER) or its
WhatsApp number (TWILIO_WHATSAPP_NUMBER) for the channel.

Status callbacks: the operator's account and the sandbox sign them with the auth token
the system address `/webhooks/twilio` knows (TWILIO_AUTH_TOKEN, or the sandbox's), so
each send names that URL as its `StatusCallback`. A tenant's own account signs with its
own token, which the system address cannot know: its callbacks arrive at the tenant's
webhook source (`createWebhookSource(provider: "twilio", secret: <auth token>)`), whose URL
the credential names as `statusCallbackUrl` (sent as each message's `StatusCallback`) and
Twilio has as the numbers' incoming-message URL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from kit.errors import GatewayError
from models.messaging import Channel
from providers import twilio
from resolvers.context import Context, Services
from resolvers.credentials import (
    CredentialSource,
    ResolvedCredential,
    is_own_sandbox,
    resolve_tenant_credential,
    twilio_client,
)

STATUS_PATH = "/webhooks/twilio"


class NoSender(GatewayError):
    """The account has no sender for the channel (no number, no Messaging Service)."""

    code = "MESSAGING_NOT_CONFIGURED"
    http_status = 503


@dataclass
class TwilioAccount:
    client: twilio.TwilioClient
    credential: ResolvedCredential
    name: str  # `twilio`, or `twilio-sandbox` when nothing reaches a handset
    status_callback: str | None

    def sender(self, channel: Channel) -> tuple[str | None, str | None]:
        """(From, MessagingServiceSid) for `channel`; NoSender when there is neither."""
        values = self.credential.secrets
        service = values.get("messaging_service_sid") or None
        number = values.get("whatsapp_number" if channel == Channel.WHATSAPP else "phone_number")
        if number:
            return twilio.address(number, whatsapp=channel == Channel.WHATSAPP), None
        if service:
            return None, service
        raise NoSender(
            f"No {channel.value} sender is configured for Twilio.",
            provider="twilio",
        )


def _is_sandbox(services: Services, credential: ResolvedCredential) -> bool:
    return credential.is_sandbox or bool(
        credential.base_url and is_own_sandbox(services.settings, credential.base_url)
    )


async def account_for(services: Services, tenant_id: int) -> TwilioAccount:
    """The tenant's Twilio account (module docstring); UPSTREAM_UNAVAILABLE when none."""
    ctx = Context(services=services, request_id=f"msg-{uuid.uuid4().hex[:12]}")
    credential = await resolve_tenant_credential(ctx, twilio.PROVIDER, tenant_id)
    client = twilio_client(ctx, credential, tenant_id)
    own = credential.source is CredentialSource.TENANT
    callback = None
    if own:
        callback = credential.secrets.get("status_callback_url") or None
    elif credential.secrets.get("auth_token"):
        callback = f"{services.settings.base_url}{STATUS_PATH}"
    name = "twilio-sandbox" if _is_sandbox(services, credential) else "twilio"
    return TwilioAccount(client, credential, name, callback)
