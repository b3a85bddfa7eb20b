from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0011_billing_subscriptions')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ConnectedAccount',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('provider', fields.CharField(max_length=32)),
                ('slot', fields.CharField(max_length=40)),
                ('user', fields.ForeignKeyField('switchboard.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('status', fields.CharField(default='CONNECTED', max_length=24)),
                ('external_id', fields.CharField(default='', max_length=255)),
                ('email', fields.CharField(default='', max_length=320)),
                ('scopes', fields.CharField(default='', max_length=2000)),
                ('client_id', fields.CharField(default='', max_length=300)),
                ('base_url', fields.CharField(null=True, max_length=500)),
                ('refresh_token', fields.TextField(default='', unique=False)),
                ('access_token', fields.TextField(default='', unique=False)),
                ('access_expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('version', fields.IntField(default=0)),
                ('renewing_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_refreshed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.CharField(null=True, max_length=500)),
                ('connected_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'connected_accounts', 'app': 'switchboard', 'unique_together': (('tenant_id', 'provider', 'slot'),), 'pk_attr': 'id', 'table_description': 'A grant to act at a provider for a member (`slot` `user:<id>`) or for the whole'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='CalendarEventLink',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('switchboard.ConnectedAccount', source_field='account_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('calendar_id', fields.CharField(max_length=255)),
                ('event_id', fields.CharField(max_length=255)),
                ('contact', fields.ForeignKeyField('switchboard.Contact', source_field='contact_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('lead', fields.ForeignKeyField('switchboard.Lead', source_field='lead_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('task', fields.ForeignKeyField('switchboard.Task', source_field='task_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'calendar_event_links', 'app': 'switchboard', 'unique_together': (('account_id', 'calendar_id', 'event_id'),), 'indexes': [Index(fields=['tenant_id', 'task_id'])], 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='Meeting',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('switchboard.ConnectedAccount', source_field='account_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('zoom_id', fields.CharField(db_index=True, max_length=32)),
                ('occurrence_uuid', fields.CharField(default='', max_length=128)),
                ('meeting_type', fields.CharField(max_length=12)),
                ('status', fields.CharField(default='WAITING', max_length=12)),
                ('topic', fields.CharField(max_length=200)),
                ('agenda', fields.TextField(default='', unique=False)),
                ('start_time', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('duration_minutes', fields.IntField(null=True)),
                ('timezone', fields.CharField(default='', max_length=64)),
                ('join_url', fields.CharField(default='', max_length=1000)),
                ('host_email', fields.CharField(default='', max_length=320)),
                ('recurrence', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('contact', fields.ForeignKeyField('switchboard.Contact', source_field='contact_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('lead', fields.ForeignKeyField('switchboard.Lead', source_field='lead_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('created_by_id', fields.BigIntField(null=True)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('ended_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('recording_ready_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('status_changed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('invited_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'meetings', 'app': 'switchboard', 'unique_together': (('tenant_id', 'zoom_id'),), 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.AddField(
            model_name='OAuthFlow',
            name='connect_scope',
            field=fields.CharField(default='', max_length=8),
        ),
        ops.AddField(
            model_name='OAuthFlow',
            name='user',
            field=fields.ForeignKeyField('switchboard.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE),
        ),
    ]
