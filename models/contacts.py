"""CRM contacts: people a tenant does business with."""

from tortoise import fields

from models.base import TenantModel


class Contact(TenantModel):
    name = fields.CharField(max_length=200)
    email = fields.CharField(max_length=320, default="")  # lower-cased; "" when unknown
    phone = fields.CharField(max_length=50, default="")
    company = fields.CharField(max_length=200, default="")
    notes = fields.TextField(default="")
    owner: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    owner_id: int | None
    # Id of the row in the tenant's external CRM (sync by upsert); unique per tenant.
    external_id = fields.CharField(max_length=200, null=True)

    class Meta:
        table = "crm_contacts"
        unique_together = (("tenant", "external_id"),)
        indexes = (("tenant", "name"), ("tenant", "owner"))
