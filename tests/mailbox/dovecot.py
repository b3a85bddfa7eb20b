"""A real dovecot (Debian's `dovecot-imapd`) run by the tests in a temporary directory.

Nothing system-wide is touched: the configuration, the passwd-file, the maildirs, the
runtime and state directories, the log and a self-signed certificate for 127.0.0.1 all
live under one temporary directory, and the server listens on loopback ports chosen
free: plain IMAP (which offers STARTTLS) and implicit TLS (imaps). `dovecot -F` runs it
in the foreground as a child of the test process, stopped at the end of the session.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.certs import self_signed_files
from tests.conftest import free_port

USERS = {"invoices": "mailbox-pass-1", "second": "mailbox-pass-2"}


@dataclass
class Dovecot:
    root: Path
    plain_port: int  # IMAP, STARTTLS offered
    tls_port: int  # imaps (implicit TLS)
    ca_file: Path  # the self-signed certificate the client trusts
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def find_binary() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot",) if os.access(p, os.X_OK)), None
    )


def _certificate(root: Path) -> tuple[Path, Path]:
    return self_signed_files(root, "cert")


def _accounts() -> tuple[str, str, pwd.struct_passwd]:
    """(internal user, login user, mail user): dovecot refuses to run its processes or
    keep mail as root, so as root the package's own unprivileged users are used; as
    anyone else, that user for everything."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_name, me
    names = {p.pw_name for p in pwd.getpwall()}
    internal = "dovecot" if "dovecot" in names else "nobody"
    login = "dovenull" if "dovenull" in names else "nobody"
    return internal, login, pwd.getpwnam(internal)


def start(binary: str) -> Dovecot:
    # A short path: dovecot's unix sockets live under base_dir (sun_path is ~108 bytes).
    root = Path(tempfile.mkdtemp(prefix="sbdc-"))
    root.chmod(0o755)
    cert_file, key_file = _certificate(root)
    internal, login, mail_user = _accounts()
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
    os.chown(root / "mail", mail_user.pw_uid, mail_user.pw_gid)
    passwd = root / "passwd"
    passwd.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in USERS.items()))
    plain_port, tls_port = free_port(), free_port()
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = sbdc-{root.name}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name}
default_login_user = {login}
first_valid_uid = 0
ssl = yes
ssl_cert = <{cert_file}
ssl_key = <{key_file}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={root}/mail/%u
}}
mail_location = maildir:{root}/mail/%u/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {plain_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil {{
    mode = 0666
  }}
}}
"""
    )
    server = Dovecot(root, plain_port, tls_port, cert_file)
    server.process = subprocess.Popen(
        [binary, "-F", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "stderr.log", "wb"),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                "dovecot exited: "
                + (root / "stderr.log").read_text(errors="replace")
                + server.log()
            )
        if all(_listening(port) for port in (plain_port, tls_port)):
            return server
        time.sleep(0.05)
    stop(server)
    raise RuntimeError("dovecot did not start listening: " + server.log())


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(server: Dovecot) -> None:
    if server.process is not None and server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)
    shutil.rmtree(server.root, ignore_errors=True)
