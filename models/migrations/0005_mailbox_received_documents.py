from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0004_mail_tracking')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MailboxState',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('mailbox', fields.CharField(max_length=255)),
                ('source', fields.CharField(max_length=16)),
                ('last_polled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_success_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('uidvalidity', fields.BigIntField(null=True)),
            ],
            options={'table': 'mailbox_state', 'app': 'switchboard', 'unique_together': (('tenant_id', 'mailbox'),), 'pk_attr': 'id', 'table_description': 'How reading one mailbox went, last time (one row per tenant and mailbox).'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='ReceivedMessage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('mailbox', fields.CharField(max_length=255)),
                ('uidvalidity', fields.BigIntField()),
                ('uid', fields.BigIntField()),
                ('message_id', fields.CharField(default='', max_length=255)),
                ('sender', fields.CharField(default='', max_length=320)),
                ('subject', fields.CharField(default='', max_length=300)),
                ('size', fields.BigIntField(default=0)),
                ('status', fields.CharField(db_index=True, max_length=16)),
                ('error', fields.TextField(null=True, unique=False)),
                ('documents', fields.IntField(default=0)),
            ],
            options={'table': 'received_message', 'app': 'switchboard', 'unique_together': (('tenant_id', 'mailbox', 'uidvalidity', 'uid'),), 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='ReceivedDocument',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('source_message', fields.ForeignKeyField('switchboard.ReceivedMessage', source_field='source_message_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('message_id', fields.CharField(default='', max_length=255)),
                ('filename', fields.CharField(max_length=200)),
                ('content_type', fields.CharField(max_length=100)),
                ('size', fields.BigIntField()),
                ('sha256', fields.CharField(max_length=64)),
                ('sender', fields.CharField(default='', max_length=320)),
                ('subject', fields.CharField(default='', max_length=300)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('status', fields.CharField(default='RECEIVED', db_index=True, max_length=16)),
            ],
            options={'table': 'received_document', 'app': 'switchboard', 'unique_together': (('tenant_id', 'sha256'),), 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='ReceivedDocumentContent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('document', fields.OneToOneField('switchboard.ReceivedDocument', source_field='document_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('content', fields.BinaryField()),
            ],
            options={'table': 'received_document_content', 'app': 'switchboard', 'pk_attr': 'id', 'table_description': "A document's bytes (until the files area stores them)."},
            bases=['TenantModel'],
        ),
    ]
