"""Provider credentials: set and remove them; list what is set, never the secrets."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from models.credentials import Credential
from resolvers import accounts, credentials
from resolvers.credentials import CredentialScope, CredentialSource, IntegrationProvider
from schema.accounts import User
from schema.permissions import mutation, query
from schema.relay import After, Connection, First, ModelNode

strawberry.enum(
    IntegrationProvider,
    description="A third-party service. The gateway has a client today for "
    + ", ".join(p.name for p in credentials.providers_with_client())
    + ": credentials are accepted and health is reported for those only; the others name "
    "vendors still to come.",
)
strawberry.enum(
    CredentialScope,
    description="Whose credential: the organization's (TENANT) or one member's own (USER).",
)
strawberry.enum(
    CredentialSource,
    description="Which link of the chain a call uses: the member's own key (USER), the "
    "organization's (TENANT), the operator's (SYSTEM) or the built-in emulator (SANDBOX).",
)


SECRETS_DESCRIPTION = (
    'The provider\'s fields as an object with camelCase keys, e.g. `{apiKey: "…"}`. '
    "OPENAI: apiKey, organization?, baseUrl?. RESEND, SENDGRID, NOTION: apiKey, baseUrl?. "
    "SMTP: host, port?, username?, password?. IMAP (a mailbox invoices are read from): host, "
    "port? (993), user, password, security? (tls, starttls or none). S3: accessKeyId, "
    "secretAccessKey, bucket?, "
    "region?, endpointUrl?. ROSSUM: apiToken, baseUrl?. STRIPE: secretKey, webhookSecret?, "
    "baseUrl?. PAYPAL: clientId, clientSecret, webhookId?, baseUrl?. TWILIO: accountSid, "
    "authToken, baseUrl?. ZOOM: accountId, clientId, clientSecret, baseUrl?. GOOGLE_CALENDAR: "
    "clientId, clientSecret, refreshToken?, baseUrl?. Stored encrypted; never returned."
)


@strawberry.type(
    description="A stored provider credential. Only what identifies it is shown: never a secret."
)
class ProviderCredential(ModelNode):
    _model: ClassVar[type] = Credential
    _permission: ClassVar[str] = "credentials:own"
    id: relay.NodeID[int]
    provider: IntegrationProvider = strawberry.field(description="The service it is for.")
    scope: CredentialScope = strawberry.field(description="Organization-wide or personal.")
    is_set: bool = strawberry.field(description="A value is stored (always true for a row).")
    last_four: str | None = strawberry.field(
        description="Last four characters of the main secret, to recognise it; null when the "
        "secret is too short to show any of it."
    )
    fields: list[str] = strawberry.field(
        description="Names of the fields stored (camelCase), without their values."
    )
    updated_at: dt.datetime = strawberry.field(description="When it was last set.")
    _set_by_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: Any) -> ProviderCredential:
        obj = cls(
            id=row.id,
            provider=IntegrationProvider(row.provider),
            scope=credentials.scope_of(row),
            is_set=bool(row.ciphertext),
            last_four=row.hint or None,
            fields=credentials.field_names(row),
            updated_at=row.updated_at,
            _set_by_id=row.set_by_id,
        )
        return obj

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Any, required: bool = False
    ) -> list[ProviderCredential | None]:
        rows = await credentials.load_nodes(info.context, [str(i) for i in node_ids])
        return [None if r is None else cls.from_row(r) for r in rows]

    @strawberry.field(description="Who set it; null for an API key or a deleted account.")
    async def set_by(self, info: Info) -> User | None:
        if self._set_by_id is None:
            return None
        row = await accounts.load_user(info.context, self._set_by_id)
        return None if row is None else User.from_row(row)


@strawberry.input(description="A credential to store (replacing the one set before).")
class SetCredentialInput:
    provider: IntegrationProvider = strawberry.field(description="The service it is for.")
    secrets: JSON = strawberry.field(description=SECRETS_DESCRIPTION)


@strawberry.input(description="The credential to remove.")
class RemoveCredentialInput:
    provider: IntegrationProvider = strawberry.field(description="The service it was for.")


@strawberry.type(description="The stored credential (without its secrets).")
class SetCredentialPayload:
    credential: ProviderCredential = strawberry.field(description="What is now stored.")
    verified: bool = strawberry.field(
        description="The vendor accepted the credential on save; false when the vendor offers "
        "no cheap check (it is stored unverified)."
    )


@strawberry.type(description="Which credential was removed.")
class RemoveCredentialPayload:
    provider: IntegrationProvider = strawberry.field(description="The service it was for.")
    removed: bool = strawberry.field(description="True when a stored credential was deleted.")


def _set_payload(result: credentials.SetResult) -> SetCredentialPayload:
    return SetCredentialPayload(
        credential=ProviderCredential.from_row(result.credential), verified=result.verified
    )


@strawberry.type
class Query:
    @query(
        operation=credentials.list_tenant_credentials,
        description="The organization's stored provider credentials (no secrets).",
    )
    async def tenant_credentials(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[ProviderCredential]:
        page = await credentials.list_tenant_credentials(info.context, first=first, after=after)
        return Connection.of(page, ProviderCredential.from_row)

    @query(
        operation=credentials.list_my_credentials,
        description="Your own stored provider credentials in this organization (no secrets).",
    )
    async def my_credentials(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[ProviderCredential]:
        page = await credentials.list_my_credentials(info.context, first=first, after=after)
        return Connection.of(page, ProviderCredential.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=credentials.set_tenant_credential,
        description="Store the organization's credential for a provider, checked with the "
        "vendor when it offers a cheap check; a refused key answers BAD_USER_INPUT.",
    )
    async def set_tenant_credential(
        self, info: Info, input: SetCredentialInput
    ) -> SetCredentialPayload:
        result = await credentials.set_tenant_credential(
            info.context, input.provider, input.secrets
        )
        return _set_payload(result)

    @mutation(
        operation=credentials.remove_tenant_credential,
        description="Remove the organization's credential for a provider.",
    )
    async def remove_tenant_credential(
        self, info: Info, input: RemoveCredentialInput
    ) -> RemoveCredentialPayload:
        provider = await credentials.remove_tenant_credential(info.context, input.provider)
        return RemoveCredentialPayload(provider=provider, removed=True)

    @mutation(
        operation=credentials.set_my_credential,
        description="Store your own credential for a provider; it takes precedence over the "
        "organization's for your requests.",
    )
    async def set_my_credential(
        self, info: Info, input: SetCredentialInput
    ) -> SetCredentialPayload:
        result = await credentials.set_my_credential(info.context, input.provider, input.secrets)
        return _set_payload(result)

    @mutation(operation=credentials.remove_my_credential, description="Remove your own credential.")
    async def remove_my_credential(
        self, info: Info, input: RemoveCredentialInput
    ) -> RemoveCredentialPayload:
        provider = await credentials.remove_my_credential(info.context, input.provider)
        return RemoveCredentialPayload(provider=provider, removed=True)
