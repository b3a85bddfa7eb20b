"""Mail recorded by the development mailer (until a real email provider sends it)."""

from tortoise import fields
from tortoise.models import Model


class RecordedMail(Model):
    id = fields.BigIntField(primary_key=True)
    recipient = fields.CharField(max_length=320, db_index=True)
    subject = fields.CharField(max_length=300)
    body = fields.TextField()
    kind = fields.CharField(max_length=40)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "recorded_mail"
