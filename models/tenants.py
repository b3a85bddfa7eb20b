"""Tenants (organisations)."""

from tortoise import fields
from tortoise.models import Model


class Tenant(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=200)
    slug = fields.CharField(max_length=80, unique=True)
    ai_monthly_token_quota = fields.BigIntField(null=True)
    # Authenticated requests per hour per caller; None: RATE_LIMIT_AUTHENTICATED. Set by
    # the organization's billing plan.
    requests_per_hour = fields.BigIntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "tenants"
