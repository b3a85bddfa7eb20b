from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0009_messaging')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Payment',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('provider', fields.CharField(max_length=16)),
                ('status', fields.CharField(default='REQUIRES_PAYMENT_METHOD', db_index=True, max_length=32)),
                ('amount_minor', fields.BigIntField()),
                ('amount_refunded_minor', fields.BigIntField(default=0)),
                ('currency', fields.CharField(max_length=3)),
                ('description', fields.CharField(null=True, max_length=1000)),
                ('customer_id', fields.BigIntField(null=True, db_index=True)),
                ('vendor_id', fields.CharField(null=True, db_index=True, max_length=255)),
                ('vendor_status', fields.CharField(null=True, max_length=64)),
                ('client_secret', fields.CharField(null=True, max_length=255)),
                ('next_action_url', fields.CharField(null=True, max_length=2000)),
                ('failure_code', fields.CharField(null=True, max_length=100)),
                ('decline_code', fields.CharField(null=True, max_length=100)),
                ('failure_message', fields.CharField(null=True, max_length=1000)),
                ('idempotency_key', fields.CharField(null=True, max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('confirm_requested', fields.BooleanField(default=False)),
                ('payment_method', fields.CharField(null=True, max_length=255)),
                ('return_url', fields.CharField(null=True, max_length=2000)),
                ('metadata', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status_changed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('succeeded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'payments', 'app': 'switchboard', 'unique_together': (('tenant_id', 'idempotency_key'),), 'pk_attr': 'id', 'table_description': "One charge. Amounts are integers of the currency's minor units (what the vendor"},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='PaymentCustomer',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('provider', fields.CharField(max_length=16)),
                ('vendor_id', fields.CharField(null=True, db_index=True, max_length=255)),
                ('email', fields.CharField(null=True, max_length=320)),
                ('name', fields.CharField(null=True, max_length=256)),
                ('idempotency_key', fields.CharField(null=True, max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'payment_customers', 'app': 'switchboard', 'unique_together': (('tenant_id', 'idempotency_key'),), 'pk_attr': 'id', 'table_description': "A customer of the organization at a payment vendor (Stripe's `cus_…`)."},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='PaymentRefund',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('payment_id', fields.BigIntField(db_index=True)),
                ('status', fields.CharField(default='PENDING', max_length=16)),
                ('amount_minor', fields.BigIntField()),
                ('currency', fields.CharField(max_length=3)),
                ('reason', fields.CharField(null=True, max_length=500)),
                ('vendor_id', fields.CharField(null=True, db_index=True, max_length=255)),
                ('failure_reason', fields.CharField(null=True, max_length=500)),
                ('idempotency_key', fields.CharField(null=True, max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'payment_refunds', 'app': 'switchboard', 'unique_together': (('tenant_id', 'idempotency_key'),), 'pk_attr': 'id', 'table_description': 'Money sent back for a payment (partial or full).'},
            bases=['TenantModel'],
        ),
    ]
