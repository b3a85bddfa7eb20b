"""Settings validation at start-up and the `switchboard` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.settings import SettingsError, generate_signing_key, load_settings

ROOT = Path(__file__).resolve().parents[2]


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


PRODUCTION_KEYS = {
    "SWITCHBOARD_ENV": "production",
    "JWT_SIGNING_KEYS": "k1:" + "s" * 40,
    "VAULT_KEYS": "cHJvZHVjdGlvbi12YXVsdC1rZXktMzItYnl0ZXMhISE=",
}


def test_production_serve_refuses_pending_migrations_naming_the_command(tmp_path):
    env = {**PRODUCTION_KEYS, "DATABASE_URL": f"sqlite://{tmp_path}/new.sqlite3"}
    out = run_cli("serve", env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "switchboard migrate" in out.stderr and "0001_initial" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_on_a_taken_port_exits_at_once(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"PORT": str(port), "DATABASE_URL": f"sqlite://{tmp_path}/db.sqlite3"}
        out = run_cli("serve", env=env, cwd=tmp_path)  # run_cli's timeout stops a hang
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "background runtime started" not in out.stderr


@pytest.mark.parametrize("after_seconds", [0.2, 3.0])
def test_sigterm_ends_serve_within_the_grace(tmp_path, after_seconds):
    import signal
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOG_JSON": "false",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite://{tmp_path}/db.sqlite3",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(after_seconds)  # before start-up ends, and once serving
        process.send_signal(signal.SIGTERM)
        # The grace (2 s) plus the close margin (5 s), and slack for a loaded machine.
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            pytest.fail("serve ignored SIGTERM")
