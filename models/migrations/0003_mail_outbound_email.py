from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0002_races_ai_quota')]

    initial = False

    operations = [
        ops.CreateModel(
            name='OutboundEmail',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(db_index=True, max_length=40)),
                ('recipient', fields.CharField(db_index=True, max_length=320)),
                ('recipient_name', fields.CharField(default='', max_length=200)),
                ('sender', fields.CharField(max_length=400)),
                ('subject', fields.CharField(max_length=300)),
                ('html', fields.TextField(unique=False)),
                ('text', fields.TextField(unique=False)),
                ('status', fields.CharField(default='QUEUED', db_index=True, max_length=16)),
                ('attempts', fields.IntField(default=0)),
                ('message_id', fields.CharField(unique=True, max_length=255)),
                ('provider', fields.CharField(null=True, max_length=40)),
                ('provider_message_id', fields.CharField(null=True, max_length=255)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbound_email', 'app': 'switchboard', 'pk_attr': 'id', 'table_description': "A message the gateway sends: written with its job in the caller's transaction."},
            bases=['TenantModel'],
        ),
        ops.DeleteModel(name='RecordedMail'),
    ]
