from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AiQuotaMonth',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('month', fields.IntField()),
                ('used', fields.BigIntField(default=0)),
                ('reserved', fields.BigIntField(default=0)),
            ],
            options={'table': 'ai_quota_months', 'app': 'switchboard', 'unique_together': (('tenant_id', 'month'),), 'pk_attr': 'id', 'table_description': "A tenant's AI tokens for one calendar month (UTC): billed (`used`, the ledger's"},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='AiReservation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('month', fields.IntField()),
                ('tokens', fields.BigIntField()),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'ai_reservations', 'app': 'switchboard', 'indexes': [Index(fields=['tenant_id', 'expires_at'])], 'pk_attr': 'id', 'table_description': "The tokens one running completion holds in its month's `reserved` until it is"},
            bases=['TenantModel'],
        ),
    ]
