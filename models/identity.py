"""Sign-in with outside accounts: the accounts linked to a user, the sign-ins under way
(state, PKCE verifier, nonce, until the provider sends the person back), and the
one-time codes the front end turns into a session; and the connected accounts (a
member's or the organization's grant to act at Google Calendar or Zoom)."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.base import TenantModel
from models.credentials import VAULT_COLUMNS


class LinkedAccount(Model):
    """A Google or GitHub account that signs a user in (one person at the provider, by
    the provider's stable subject id, never by email)."""

    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, on_delete=fields.CASCADE
    )
    user_id: int
    provider = fields.CharField(max_length=32)
    subject = fields.CharField(max_length=255)
    email = fields.CharField(max_length=320)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "linked_accounts"
        unique_together = (("provider", "subject"),)


class OAuthFlow(Model):
    """One sign-in on its way through the provider: found again by its state (hashed),
    and only from the browser that started it (the cookie's hash)."""

    id = fields.BigIntField(primary_key=True)
    provider = fields.CharField(max_length=32)
    state_hash = fields.CharField(max_length=64, unique=True)
    browser_hash = fields.CharField(max_length=64)
    verifier = fields.CharField(max_length=128)
    nonce = fields.CharField(max_length=128)
    # Single sign-on: the organization whose identity provider this sign-in goes through.
    tenant: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Tenant", related_name=False, null=True, on_delete=fields.CASCADE
    )
    tenant_id: int | None
    # Connecting an account (not signing in): who connects it, and for whom ("user" or
    # "tenant"); the browser is not bound, the state is bound to this member.
    user: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.CASCADE
    )
    user_id: int | None
    connect_scope = fields.CharField(max_length=8, default="")
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "oauth_flows"


class LoginCode(Model):
    """What the callback hands the front end instead of tokens: used once, soon."""

    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, on_delete=fields.CASCADE
    )
    user_id: int
    # The organization the session opens in (single sign-on); else the first one joined.
    tenant: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Tenant", related_name=False, null=True, on_delete=fields.CASCADE
    )
    tenant_id: int | None
    code_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "login_codes"


class SsoConnection(TenantModel):
    """An organization's own OpenID Connect identity provider (one per organization)."""

    issuer = fields.CharField(max_length=500)
    client_id = fields.CharField(max_length=300)
    client_secret = fields.TextField()  # vault token
    # Members (all but OWNERs, who keep a way in when the provider is down) must sign in
    # through it: their password sign-in is refused.
    required = fields.BooleanField(default=False)
    default_role = fields.CharField(max_length=16)  # what a person joining through it gets

    class Meta:
        table = "sso_connections"
        unique_together = (("tenant_id",),)


class ConnectionStatus(StrEnum):
    CONNECTED = "CONNECTED"
    # The provider refused the grant (revoked, expired, the app's credentials withdrawn):
    # calls fail until a person connects again.
    NEEDS_RECONNECTION = "NEEDS_RECONNECTION"


class ConnectedAccount(TenantModel):
    """A grant to act at a provider for a member (`slot` `user:<id>`) or for the whole
    organization (`tenant`): Google Calendar's offline grant (its refresh token), Zoom's
    server-to-server app (its credential lives in the organization's credentials). The
    current access token is kept too, both in the vault. The row is the truth across
    processes: a renewal takes it with a conditional update on `version` (and holds it
    until `renewing_until`), and every write of a renewal's outcome is conditional on the
    version it took, so two processes never both renew, and the loser reads the winner's
    token."""

    provider = fields.CharField(max_length=32)
    slot = fields.CharField(max_length=40)  # "tenant" or "user:<id>"
    user: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.CASCADE
    )
    user_id: int | None
    status = fields.CharField(max_length=24, default=ConnectionStatus.CONNECTED.value)
    external_id = fields.CharField(max_length=255, default="")  # the provider's account id
    email = fields.CharField(max_length=320, default="")
    scopes = fields.CharField(max_length=2000, default="")
    client_id = fields.CharField(max_length=300, default="")  # the app the grant is for
    base_url = fields.CharField(
        max_length=500, null=True
    )  # where it was granted (not the vendor's)
    refresh_token = fields.TextField(default="")  # vault token; "" without one (Zoom)
    access_token = fields.TextField(default="")  # vault token
    access_expires_at = fields.DatetimeField(null=True)
    version = fields.IntField(default=0)
    renewing_until = fields.DatetimeField(null=True)
    last_refreshed_at = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=500, null=True)
    connected_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "connected_accounts"
        unique_together = (("tenant_id", "provider", "slot"),)


VAULT_COLUMNS.append((SsoConnection, "client_secret"))
VAULT_COLUMNS.append((ConnectedAccount, "refresh_token"))
VAULT_COLUMNS.append((ConnectedAccount, "access_token"))
