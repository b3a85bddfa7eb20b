"""Settings validation at start-up and the `switchboard` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import SettingsError, generate_signing_key, load_settings

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_JSON": "false"}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_default_signing_key():
    with pytest.raises(SettingsError) as err:
        load_settings(switchboard_env="production")
    assert "JWT_SIGNING_KEYS" in str(err.value)


def test_production_accepts_real_keys():
    from cryptography.fernet import Fernet

    s = load_settings(
        switchboard_env="production",
        jwt_signing_keys=generate_signing_key(),
        vault_keys=Fernet.generate_key().decode(),
    )
    assert s.is_production and not s.graphiql_enabled and not s.sandboxes_enabled


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "not-a-port"}, "PORT"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"JWT_SIGNING_KEYS": "no-colon"}, "JWT_SIGNING_KEYS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"SWITCHBOARD_ENV": "staging"}, "SWITCHBOARD_ENV"),
    ],
)
def test_bad_setting_stops_serve_naming_it(env, name, tmp_path):
    out = run_cli("serve", env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert name in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_in_production_with_defaults_refuses(tmp_path):
    out = run_cli("serve", env={"SWITCHBOARD_ENV": "production"}, cwd=tmp_path)
    assert out.returncode == 2 and "JWT_SIGNING_KEYS" in out.stderr


def test_create_owner_then_duplicate(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite://{tmp_path}/cli.sqlite3",
        "SWITCHBOARD_OWNER_PASSWORD": "a long passphrase here",
    }
    first = run_cli(
        "create-owner", "--organization", "Initech", "--email", "boss@initech.test", env=env
    )
    assert first.returncode == 0, first.stderr
    assert "boss@initech.test" in first.stdout
    again = run_cli(
        "create-owner", "--organization", "Initech", "--email", "boss@initech.test", env=env
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr


def test_create_owner_weak_password_is_refused(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite://{tmp_path}/cli.sqlite3",
        "SWITCHBOARD_OWNER_PASSWORD": "short",
    }
    out = run_cli("create-owner", "--organization", "X", "--email", "a@b.io", env=env)
    assert out.returncode == 1 and "password" in out.stderr


def test_export_schema_check_detects_drift(tmp_path):
    stale = tmp_path / "schema.graphql"
    stale.write_text("type Query { stale: Int }\n")
    out = run_cli("export-schema", "--check", "--output", str(stale))
    assert out.returncode == 1 and "out of date" in out.stderr
    assert run_cli("export-schema", "--output", str(stale)).returncode == 0
    assert run_cli("export-schema", "--check", "--output", str(stale)).returncode == 0


def test_help_lists_commands():
    out = run_cli("--help")
    for command in ("serve", "migrate", "export-schema", "create-owner"):
        assert command in out.stdout
