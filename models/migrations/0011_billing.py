from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0010_payments')]

    initial = False

    operations = [
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
