from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0005_mailbox_received_documents')]

    initial = False

    operations = [
        ops.CreateModel(
            name='File',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=255)),
                ('content_type', fields.CharField(default='', max_length=127)),
                ('size', fields.BigIntField()),
                ('sha256', fields.CharField(max_length=64)),
                ('purpose', fields.CharField(max_length=16)),
                ('storage_key', fields.CharField(unique=True, max_length=255)),
                ('status', fields.CharField(default='READY', max_length=16)),
                ('created_by', fields.ForeignKeyField('switchboard.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'files', 'app': 'switchboard', 'indexes': [Index(fields=['tenant_id', 'purpose', 'status'])], 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
    ]
