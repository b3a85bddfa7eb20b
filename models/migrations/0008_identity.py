from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0007_invoices')]

    initial = False

    operations = [
        ops.CreateModel(
            name='LinkedAccount',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('switchboard.User', source_field='user_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('provider', fields.CharField(max_length=32)),
                ('subject', fields.CharField(max_length=255)),
                ('email', fields.CharField(max_length=320)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('last_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'linked_accounts', 'app': 'switchboard', 'unique_together': (('provider', 'subject'),), 'pk_attr': 'id', 'table_description': 'A Google or GitHub account that signs a user in (one person at the provider, by'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LoginCode',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('switchboard.User', source_field='user_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('code_hash', fields.CharField(unique=True, max_length=64)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'login_codes', 'app': 'switchboard', 'pk_attr': 'id', 'table_description': 'What the callback hands the front end instead of tokens: used once, soon.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OAuthFlow',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('provider', fields.CharField(max_length=32)),
                ('state_hash', fields.CharField(unique=True, max_length=64)),
                ('browser_hash', fields.CharField(max_length=64)),
                ('verifier', fields.CharField(max_length=128)),
                ('nonce', fields.CharField(max_length=128)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'oauth_flows', 'app': 'switchboard', 'pk_attr': 'id', 'table_description': 'One sign-in on its way through the provider: found again by its state (hashed),'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SsoConnection',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('issuer', fields.CharField(max_length=500)),
                ('client_id', fields.CharField(max_length=300)),
                ('client_secret', fields.TextField(unique=False)),
                ('required', fields.BooleanField(default=False)),
                ('default_role', fields.CharField(max_length=16)),
            ],
            options={'table': 'sso_connections', 'app': 'switchboard', 'unique_together': (('tenant_id',),), 'pk_attr': 'id', 'table_description': "An organization's own OpenID Connect identity provider (one per organization)."},
            bases=['TenantModel'],
        ),
    ]
