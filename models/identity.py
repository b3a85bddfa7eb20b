"""Sign-in with outside accounts: the accounts linked to a user, the sign-ins under way
(state, PKCE verifier, nonce, until the provider sends the person back), and the
one-time codes the front end turns into a session."""

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


VAULT_COLUMNS.append((SsoConnection, "client_secret"))
