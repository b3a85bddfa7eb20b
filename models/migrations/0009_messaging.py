from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0008_identity')]

    initial = False

    operations = [
        ops.CreateModel(
            name='InboxConversation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('contact', fields.ForeignKeyField('switchboard.Contact', source_field='contact_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('channel', fields.CharField(max_length=10)),
                ('address', fields.CharField(max_length=320)),
                ('status', fields.CharField(default='OPEN', max_length=10)),
                ('assignee', fields.ForeignKeyField('switchboard.User', source_field='assignee_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('unread', fields.IntField(default=0)),
                ('last_message_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_preview', fields.CharField(default='', max_length=200)),
                ('subject', fields.CharField(default='', max_length=300)),
                ('closed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'inbox_conversations', 'app': 'switchboard', 'unique_together': (('tenant_id', 'channel', 'address'),), 'indexes': [Index(fields=['tenant_id', 'status']), Index(fields=['tenant_id', 'last_message_at'])], 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='PhoneOptOut',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('number', fields.CharField(max_length=32)),
                ('reason', fields.CharField(max_length=10)),
                ('detail', fields.CharField(default='', max_length=200)),
            ],
            options={'table': 'phone_opt_out', 'app': 'switchboard', 'unique_together': (('tenant_id', 'number'),), 'pk_attr': 'id', 'table_description': "A number this tenant's messages no longer go to (E.164)."},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='SmsBatch',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('total', fields.IntField()),
                ('queued', fields.IntField()),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'sms_batch', 'app': 'switchboard', 'pk_attr': 'id', 'table_description': 'One `sendBulkSms`: its messages point here.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='Message',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('direction', fields.CharField(default='OUTBOUND', max_length=10)),
                ('channel', fields.CharField(db_index=True, max_length=10)),
                ('kind', fields.CharField(max_length=20)),
                ('recipient', fields.CharField(db_index=True, max_length=320)),
                ('sender', fields.CharField(default='', max_length=320)),
                ('body', fields.TextField(default='', unique=False)),
                ('subject', fields.CharField(default='', max_length=300)),
                ('media_urls', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('content_sid', fields.CharField(null=True, max_length=34)),
                ('content_variables', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharField(default='QUEUED', db_index=True, max_length=12)),
                ('attempts', fields.IntField(default=0)),
                ('provider', fields.CharField(null=True, max_length=40)),
                ('provider_sid', fields.CharField(null=True, unique=True, max_length=64)),
                ('error_code', fields.CharField(null=True, max_length=20)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('segments', fields.IntField(null=True)),
                ('batch', fields.ForeignKeyField('switchboard.SmsBatch', source_field='batch_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('conversation', fields.ForeignKeyField('switchboard.InboxConversation', source_field='conversation_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('author_id', fields.BigIntField(null=True)),
                ('claimed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('status_changed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'messages', 'app': 'switchboard', 'indexes': [Index(fields=['tenant_id', 'conversation_id'])], 'pk_attr': 'id', 'table_description': 'An SMS or WhatsApp message (or, in a conversation, an email), either way.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='VerificationCode',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('user_id', fields.BigIntField(db_index=True)),
                ('phone', fields.CharField(max_length=32)),
                ('channel', fields.CharField(max_length=10)),
                ('code_hash', fields.CharField(max_length=64)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('verified_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('superseded', fields.BooleanField(default=False)),
                ('message', fields.ForeignKeyField('switchboard.Message', source_field='message_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'verification_codes', 'app': 'switchboard', 'indexes': [Index(fields=['user_id', 'phone'])], 'pk_attr': 'id', 'table_description': 'A code sent to prove a member holds a phone: stored as a keyed hash, never as'},
            bases=['TenantModel'],
        ),
        ops.AddField(
            model_name='User',
            name='phone',
            field=fields.CharField(null=True, max_length=32),
        ),
        ops.AddField(
            model_name='User',
            name='phone_verified_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
