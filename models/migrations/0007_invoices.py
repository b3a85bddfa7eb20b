from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0006_files')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Invoice',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('status', fields.CharField(default='STORED', db_index=True, max_length=16)),
                ('source', fields.CharField(max_length=16)),
                ('filename', fields.CharField(max_length=200)),
                ('sha256', fields.CharField(max_length=64)),
                ('size', fields.BigIntField()),
                ('received_document_id', fields.BigIntField(null=True, unique=True)),
                ('file_id', fields.BigIntField(null=True)),
                ('annotation_id', fields.CharField(null=True, db_index=True, max_length=64)),
                ('rossum_document_id', fields.CharField(null=True, max_length=64)),
                ('submit_attempts', fields.IntField(default=0)),
                ('invoice_number', fields.CharField(null=True, max_length=100)),
                ('vendor_name', fields.CharField(null=True, db_index=True, max_length=300)),
                ('total_amount', fields.DecimalField(null=True, max_digits=18, decimal_places=4)),
                ('currency', fields.CharField(null=True, max_length=3)),
                ('issue_date', fields.DateField(null=True)),
                ('due_date', fields.DateField(null=True)),
                ('line_items', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('failure_reason', fields.TextField(null=True, unique=False)),
                ('submitted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('processed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('status_changed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('corrected_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('corrected_by_id', fields.BigIntField(null=True)),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'invoices', 'app': 'switchboard', 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
    ]
