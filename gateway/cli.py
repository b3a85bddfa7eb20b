"""The `switchboard` command: serve, migrate, export-schema, create-owner, deactivate-user…"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from kit.settings import SettingsError, get_settings
from models.config import tortoise_config


def _settings():  # type: ignore[no-untyped-def]
    try:
        return get_settings()
    except SettingsError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.server import Server, listen
    from models import store as db

    settings = _settings()
    host, port = args.host or settings.host, args.port or settings.port
    if settings.is_production:
        pending = asyncio.run(db.pending_migrations(settings))
        if pending:
            print(f"switchboard: {db.MigrationsPending(pending)}", file=sys.stderr)
            return 2
    # Listen before anything starts: a taken port ends the command at once, before the
    # store, the worker and the relay are up (uvicorn would start them, then fail to bind).
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(
            f"switchboard: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        ws_per_message_deflate=False,
        proxy_headers=False,
    )
    server = Server(config, grace=settings.worker_shutdown_grace_seconds)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from models import store as db

    settings = _settings()

    async def run() -> None:
        try:
            await db.migrate(settings)
        finally:
            await db.close_store()

    asyncio.run(run())
    print("migrations applied")
    return 0


def cmd_makemigrations(args: argparse.Namespace) -> int:
    """Developer command: write a migration for model changes (Tortoise's own autodetector)."""
    from tortoise.cli.cli import main as tortoise_main

    settings = _settings()
    if args.check:
        pending = asyncio.run(_pending_migrations(settings))
        if pending:
            print("models changed without a migration: " + ", ".join(pending), file=sys.stderr)
            return 1
        print("No changes detected")
        return 0
    sys.argv = ["tortoise", "-c", "gateway.tortoise_config.TORTOISE_ORM", "makemigrations"]
    if args.name:
        sys.argv += ["--name", args.name]
    tortoise_main()
    return 0


async def _pending_migrations(settings: Any) -> list[str]:
    """What makemigrations would write, without writing it."""
    from tortoise.cli.cli import tortoise_cli_context
    from tortoise.migrations.autodetector import MigrationAutodetector

    config = tortoise_config(settings)
    async with tortoise_cli_context(config) as ctx:
        assert ctx.apps is not None  # initialised by the context
        writers = await MigrationAutodetector(ctx.apps, config["apps"]).changes()
    return [f"{w.app_label}.{w.name}" for w in writers]


def cmd_export_schema(args: argparse.Namespace) -> int:
    from schema.build import export_sdl

    sdl = export_sdl(_settings())
    target = Path(args.output)
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != sdl:
            print(f"{target} is out of date; run `switchboard export-schema`", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    if args.output == "-":
        sys.stdout.write(sdl)
    else:
        target.write_text(sdl)
        print(f"wrote {target}")
    return 0


def cmd_create_owner(args: argparse.Namespace) -> int:
    from gateway.app import build_services
    from kit.errors import GatewayError
    from models import store as db
    from resolvers import accounts
    from resolvers.context import Context

    settings = _settings()
    password = args.password or os.environ.get("SWITCHBOARD_OWNER_PASSWORD")
    if not password:
        password = getpass.getpass("Password for the owner: ")

    async def run() -> int:
        await db.open_store(settings, apply_migrations=True)
        try:
            ctx = Context(services=build_services(settings), request_id="cli", client_ip="cli")
            result = await accounts.register_organization(
                ctx,
                organization_name=args.organization,
                email=args.email,
                password=password,
                name=args.name or "",
            )
        except GatewayError as exc:
            details = getattr(exc, "details", None) or exc.extensions.get("details") or {}
            extra = "; ".join(f"{k} {v}" for k, v in details.items())
            print(
                f"switchboard: {exc.message}{' (' + extra + ')' if extra else ''}", file=sys.stderr
            )
            return 1
        finally:
            await db.close_store()
        print(
            f"created organization {result.tenant.name!r} (slug {result.tenant.slug}) "
            f"with owner {result.user.email}"
        )
        return 0

    return asyncio.run(run())


def cmd_deactivate_user(args: argparse.Namespace) -> int:
    """Disable an account; its tokens and keys stop at their next request in every
    process (the change goes out on the event bus: Redis when REDIS_URL is set)."""
    from gateway.app import build_services
    from kit.bus import create_bus
    from models import store as db
    from models.accounts import User
    from resolvers import accounts, events
    from resolvers.context import Context

    settings = _settings()

    async def run() -> int:
        await db.open_store(settings)
        bus = create_bus(settings.redis_url, prefix=settings.redis_key_prefix)
        events.install_bus(bus)
        try:
            user = await User.filter(email=args.email.strip().lower()).first()
            ctx = Context(services=build_services(settings), request_id="cli", client_ip="cli")
            done = user is not None and await accounts.deactivate_user(ctx, user.id)
        finally:
            events.install_bus(None)
            await bus.close()
            await db.close_store()
        if not done:
            print(f"switchboard: no account with email {args.email}", file=sys.stderr)
            return 1
        print(f"deactivated {args.email}; its sessions, tokens and API keys have stopped")
        return 0

    return asyncio.run(run())


def cmd_rotate_vault_key(args: argparse.Namespace) -> int:
    """Re-encrypt every stored secret under the first VAULT_KEYS key (batched transactions)."""
    from models import store as db
    from resolvers.credentials import rotate_vault

    settings = _settings()

    async def run() -> int:
        await db.open_store(settings)
        try:
            report = await rotate_vault(settings.vault_keys, batch_size=args.batch_size)
        finally:
            await db.close_store()
        print(
            f"re-encrypted {report.rotated} secret(s) under the newest vault key; "
            f"{report.current} already current"
        )
        if report.unreadable:
            print(
                f"switchboard: {len(report.unreadable)} secret(s) cannot be decrypted with any "
                f"key in VAULT_KEYS and were left as they are: {', '.join(report.unreadable)}",
                file=sys.stderr,
            )
            return 1
        return 0

    return asyncio.run(run())


def cmd_generate_vault_key(args: argparse.Namespace) -> int:
    from kit.vault import generate_key

    print(generate_key())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run only the background runtime (jobs, periodic jobs, outbox relay) until SIGTERM/SIGINT."""
    import signal

    from gateway.worker import Runtime, load_handlers
    from kit.logging import configure_logging
    from models import store as db

    settings = _settings()
    configure_logging(settings.log_level, settings.log_json)
    load_handlers(args.imports)

    async def run() -> None:
        await db.open_store(settings)
        runtime = Runtime(settings, run_jobs=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await runtime.start()
            print(f"worker {runtime.worker_id} running", flush=True)
            await stop.wait()
        finally:
            await runtime.stop()
            await db.close_store()

    asyncio.run(run())
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """Operators: list failed/dead jobs of every tenant (and system jobs), or re-run one."""
    from kit.errors import GatewayError
    from models import store as db
    from resolvers import jobs

    settings = _settings()

    async def run() -> int:
        await db.open_store(settings)
        try:
            if args.retry is not None:
                job = await jobs.requeue(args.retry, tenant_id=None)
                print(f"job {job.id} ({job.kind}) queued again")
                return 0
            rows = await jobs.jobs_for_operator(
                status=args.status, kind=args.kind, limit=args.limit
            )
            for job in rows:
                error = (job.last_error or "").splitlines()[-1:] or [""]
                print(
                    f"{job.id}\t{job.status}\t{job.kind}\ttenant={job.tenant_id or '-'}\t"
                    f"attempts={job.attempts}/{job.max_attempts}\t"
                    f"run_at={job.run_at:%Y-%m-%d %H:%M:%S}\t{error[0][:120]}"
                )
            if not rows:
                print("no jobs", file=sys.stderr)
            return 0
        except GatewayError as exc:
            print(f"switchboard: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await db.close_store()

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard GraphQL gateway (settings come from the environment).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway (GraphiQL at /graphql in development)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        func=cmd_migrate
    )
    mk = sub.add_parser("makemigrations", help="(developers) write a migration for model changes")
    mk.add_argument("--name", default=None)
    mk.add_argument(
        "--check", action="store_true", help="fail if models need a migration; write nothing"
    )
    mk.set_defaults(func=cmd_makemigrations)
    exp = sub.add_parser("export-schema", help="write the GraphQL SDL (schema.graphql)")
    exp.add_argument("--output", "-o", default="schema.graphql")
    exp.add_argument("--check", action="store_true", help="fail if the file is out of date")
    exp.set_defaults(func=cmd_export_schema)
    owner = sub.add_parser("create-owner", help="bootstrap an organization and its owner")
    owner.add_argument("--organization", required=True)
    owner.add_argument("--email", required=True)
    owner.add_argument("--name", default="")
    owner.add_argument(
        "--password", default=None, help="default: $SWITCHBOARD_OWNER_PASSWORD or a prompt"
    )
    owner.set_defaults(func=cmd_create_owner)
    deactivate = sub.add_parser(
        "deactivate-user", help="disable an account: sign-ins, sessions, tokens and keys stop"
    )
    deactivate.add_argument("--email", required=True)
    deactivate.set_defaults(func=cmd_deactivate_user)
    worker = sub.add_parser("worker", help="run background jobs and the event relay only")
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        help="also import this module (extra job handlers); repeatable",
    )
    worker.set_defaults(func=cmd_worker)
    jobs_cmd = sub.add_parser(
        "jobs", help="list failed and dead background jobs of every tenant, or re-run one"
    )
    jobs_cmd.add_argument(
        "--status", default=None, help="queued, running, succeeded, failed or dead"
    )
    jobs_cmd.add_argument("--kind", default=None)
    jobs_cmd.add_argument("--limit", type=int, default=50)
    jobs_cmd.add_argument("--retry", type=int, default=None, metavar="ID", help="re-run job ID now")
    jobs_cmd.set_defaults(func=cmd_jobs)
    rot = sub.add_parser(
        "rotate-vault-key",
        help="re-encrypt stored secrets under the first VAULT_KEYS key (then drop old keys)",
    )
    rot.add_argument("--batch-size", type=int, default=200)
    rot.set_defaults(func=cmd_rotate_vault_key)
    sub.add_parser("generate-vault-key", help="print a new Fernet key for VAULT_KEYS").set_defaults(
        func=cmd_generate_vault_key
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
