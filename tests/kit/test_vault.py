"""The secret vault: round trip, rotation, start-up validation, `rotate-vault-key`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kit.settings import DEV_VAULT_KEY, SettingsError, load_settings
from kit.vault import Vault, VaultError, generate_key
from models.credentials import Credential
from resolvers.credentials import CredentialSource, resolve_credential
from tests.conftest import gql, make_settings
from tests.credentials.test_credentials import SET_TENANT, ctx_for, tenant_id_of, user_id_of

ROOT = Path(__file__).resolve().parents[2]


def test_round_trip_and_rotation():
    old, new = generate_key(), generate_key()
    token = Vault([old]).encrypt("sk-secret-value")
    assert "sk-secret-value" not in token
    assert Vault([old]).decrypt(token) == "sk-secret-value"

    both = Vault([new, old])  # new key first: it encrypts, the old one still decrypts
    assert both.decrypt(token) == "sk-secret-value"
    assert not both.is_current(token)
    rotated = both.rotate(token)
    assert both.is_current(rotated)
    assert Vault([new]).decrypt(rotated) == "sk-secret-value"  # the old key can go
    with pytest.raises(VaultError) as info:
        Vault([new]).decrypt(token)
    assert "VAULT_KEYS" in str(info.value) and token not in str(info.value)
    with pytest.raises(VaultError):
        both.decrypt("not-a-token")


def test_invalid_keys_stop_start_up_naming_the_setting():
    for bad in ("short", "x" * 44, ""):
        with pytest.raises(SettingsError) as info:
            load_settings(vault_keys=bad)
        assert "VAULT_KEYS" in str(info.value)
        if bad:
            assert bad not in str(info.value)
    good = generate_key()
    assert load_settings(vault_keys=f"{good},{DEV_VAULT_KEY}").vault_keys == [good, DEV_VAULT_KEY]


def test_invalid_key_stops_the_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rotate-vault-key"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "VAULT_KEYS": "nonsense", "LOG_JSON": "false"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "VAULT_KEYS" in out.stderr and "nonsense" not in out.stderr


def rotate_cli(database_url: str, keys: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SWITCHBOARD_ENV": "test",
        "DATABASE_URL": database_url,
        "VAULT_KEYS": ",".join(keys),
        "LOG_JSON": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rotate-vault-key", "--batch-size", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_rotate_vault_key_command(client, owner, store):
    keys = {"OPENAI": f"openai-{uuid.uuid4().hex}"}
    body = await gql(
        client,
        SET_TENANT,
        {"input": {"provider": "OPENAI", "secrets": {"apiKey": keys["OPENAI"]}}},
        owner.token,
    )
    assert "errors" not in body, body
    # Rows of providers without a client (stored before the gateway refused them) are
    # rotated like any other.
    for provider, field in (("google_calendar", "api_key"), ("paypal", "secret_key")):
        token = Vault([DEV_VAULT_KEY]).encrypt(json.dumps({field: uuid.uuid4().hex}))
        await Credential.create(
            tenant_id=tenant_id_of(owner), provider=provider, slot="tenant", ciphertext=token
        )

    new = generate_key()
    # Every vault column of every area (credentials, organizations' single sign-on, ...).
    from models.credentials import VAULT_COLUMNS

    # (A column may hold no secret, e.g. a Zoom connection has no refresh token: "".)
    total = sum([await model.exclude(**{column: ""}).count() for model, column in VAULT_COLUMNS])
    try:
        out = rotate_cli(store.url, [new, DEV_VAULT_KEY])
        assert out.returncode == 0, out.stderr
        assert f"re-encrypted {total} secret(s)" in out.stdout

        # Every stored ciphertext is now under the new key alone ...
        only_new = Vault([new])
        for row in await Credential.all():
            json.loads(only_new.decrypt(row.ciphertext))
        for model, column in VAULT_COLUMNS:
            for secret_row in await model.exclude(**{column: ""}):
                assert only_new.is_current(getattr(secret_row, column))
        # ... so a gateway configured without the old key still reads them.
        settings = make_settings(database_url=store.url, vault_keys=[new])
        ctx = ctx_for(settings, tenant_id_of(owner), user_id_of(owner), "OWNER")
        resolved = await resolve_credential(ctx, "openai")
        assert resolved.source is CredentialSource.TENANT
        assert resolved.secrets["api_key"] == keys["OPENAI"]

        again = rotate_cli(store.url, [new, DEV_VAULT_KEY])
        assert again.returncode == 0 and "re-encrypted 0 secret(s)" in again.stdout
        assert f"{total} already current" in again.stdout

        # A row no key can read is reported and left alone; the command fails.
        stray = await Credential.create(
            tenant_id=tenant_id_of(owner), provider="zoom", slot="tenant", ciphertext="garbage"
        )
        try:
            broken = rotate_cli(store.url, [new])
            assert broken.returncode == 1
            assert f"Credential#{stray.id}" in broken.stderr
            assert (await Credential.get(id=stray.id)).ciphertext == "garbage"
        finally:
            await stray.delete()
    finally:
        # Put every secret back under the development key the other tests use.
        back = rotate_cli(store.url, [DEV_VAULT_KEY, new])
        assert back.returncode == 0, back.stderr
    for row in await Credential.all():
        assert Vault([DEV_VAULT_KEY]).is_current(row.ciphertext)
