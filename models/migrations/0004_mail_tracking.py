from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0003_mail_outbound_email')]

    initial = False

    operations = [
        ops.CreateModel(
            name='EmailBatch',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('subject', fields.CharField(max_length=300)),
                ('template', fields.CharField(null=True, max_length=60)),
                ('broadcast', fields.BooleanField(default=True)),
                ('total', fields.IntField()),
                ('queued', fields.IntField()),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'email_batch', 'app': 'switchboard', 'pk_attr': 'id', 'table_description': 'One `sendBulkEmail`: its messages are OutboundEmail rows pointing here.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='EmailSuppression',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('address', fields.CharField(max_length=320)),
                ('reason', fields.CharField(max_length=16)),
                ('detail', fields.CharField(default='', max_length=500)),
                ('email', fields.ForeignKeyField('switchboard.OutboundEmail', source_field='email_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'email_suppression', 'app': 'switchboard', 'unique_together': (('tenant_id', 'address'),), 'pk_attr': 'id', 'table_description': "An address this tenant's mail no longer goes to (lower-cased)."},
            bases=['TenantModel'],
        ),
        ops.AlterField(
            model_name='OutboundEmail',
            name='provider_message_id',
            field=fields.CharField(null=True, db_index=True, max_length=255),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='batch',
            field=fields.ForeignKeyField('switchboard.EmailBatch', source_field='batch_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='bcc',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='cc',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='delivered_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='reply_to',
            field=fields.CharField(default='', max_length=400),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='status_changed_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='to_more',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='unsubscribe_token',
            field=fields.CharField(null=True, unique=True, max_length=64),
        ),
    ]
