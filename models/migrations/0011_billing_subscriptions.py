from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0010_payments')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PaymentSubscription',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('provider', fields.CharField(max_length=16)),
                ('customer_id', fields.BigIntField(null=True, db_index=True)),
                ('price', fields.CharField(max_length=255)),
                ('status', fields.CharField(default='incomplete', db_index=True, max_length=32)),
                ('vendor_id', fields.CharField(null=True, db_index=True, max_length=255)),
                ('item_id', fields.CharField(null=True, max_length=255)),
                ('latest_invoice', fields.CharField(null=True, max_length=255)),
                ('approve_url', fields.CharField(null=True, max_length=2000)),
                ('current_period_end', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('cancel_at_period_end', fields.BooleanField(default=False)),
                ('synced_at', fields.BigIntField(default=0)),
                ('idempotency_key', fields.CharField(null=True, max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'payment_subscriptions', 'app': 'switchboard', 'unique_together': (('tenant_id', 'idempotency_key'),), 'pk_attr': 'id', 'table_description': "A customer's subscription to one of the organization's prices at the vendor"},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='TenantBilling',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('plan', fields.CharField(max_length=40)),
                ('stripe_customer_id', fields.CharField(null=True, unique=True, max_length=255)),
                ('stripe_subscription_id', fields.CharField(null=True, db_index=True, max_length=255)),
                ('subscription_status', fields.CharField(null=True, max_length=32)),
                ('price_id', fields.CharField(null=True, max_length=255)),
                ('current_period_end', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('cancel_at_period_end', fields.BooleanField(default=False)),
                ('synced_at', fields.BigIntField(default=0)),
            ],
            options={'table': 'tenant_billing', 'app': 'switchboard', 'unique_together': (('tenant_id',),), 'pk_attr': 'id', 'table_description': 'One per organization that ever started a checkout: its Stripe customer (in the'},
            bases=['TenantModel'],
        ),
        ops.AddField(
            model_name='Tenant',
            name='requests_per_hour',
            field=fields.BigIntField(null=True),
        ),
    ]
