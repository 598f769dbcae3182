#!/usr/bin/env python3
"""Pinstream: start the server, or run an admin command.

    python run_server.py [--config PATH] [--host H] [--port P]      serve (default http://127.0.0.1:8080)
    python run_server.py check-config [PATH]                        validate, print effective settings
    python run_server.py migrate [--config PATH]                    apply database migrations
    python run_server.py create-user EMAIL --role host [--password-file F] [--config PATH]
    python run_server.py stream-key EMAIL [--config PATH]           rotate a host's stream key, print it once

A config problem exits with status 2 and one line per problem on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from config import ConfigError, Secrets, Settings, apply_overrides, load_secrets, load_settings
from config.logs import configure_logging

logger = logging.getLogger("pinstream")

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="YAML settings file (default: the documented defaults, config/default.yml)")
    parser = argparse.ArgumentParser(prog="run_server.py", description=__doc__.split("\n")[0],
                                     parents=[common])
    parser.set_defaults(config=None, command="serve")
    parser.add_argument("--host", help="listen address, overriding server.host")
    parser.add_argument("--port", type=int, help="listen port, overriding server.port")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", parents=[common], help="start the server (the default)")
    check = commands.add_parser("check-config", parents=[common],
                                help="validate a config file and print the effective settings")
    check.add_argument("path", nargs="?", type=Path, help="file to check (default: --config)")
    commands.add_parser("migrate", parents=[common], help="apply pending database migrations")
    create = commands.add_parser("create-user", parents=[common], help="create an account")
    create.add_argument("email")
    create.add_argument("--role", choices=("viewer", "host", "admin"), default="viewer")
    create.add_argument("--display-name", help="shown to others (default: the part of EMAIL before @)")
    create.add_argument("--password-file", type=Path,
                        help="file holding the password (default: prompt for it, without echo)")
    key = commands.add_parser("stream-key", parents=[common],
                              help="rotate a host's stream key and print the new one (shown only once)")
    key.add_argument("email")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path: Path | None = getattr(args, "path", None) or args.config
    overrides = {f"server.{key}": value for key in ("host", "port")
                 if (value := getattr(args, key, None)) is not None}

    def load(file: Path | None) -> Settings:
        return apply_overrides(load_settings(file), overrides)

    try:
        settings = load(path)
        secrets = load_secrets(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "check-config":
        return check_config(settings, secrets)
    configure_logging(settings.logging, secrets.values())
    if args.command == "migrate":
        return asyncio.run(run_migrations(settings, secrets))
    if args.command == "create-user":
        password = _read_password(args.password_file)
        if password is None:
            return 1
        return asyncio.run(admin_command(settings, secrets, lambda session: _create_user(
            session, args.email, password, args.role, args.display_name)))
    if args.command == "stream-key":
        return asyncio.run(admin_command(settings, secrets, lambda session: _rotate_stream_key(session, args.email)))
    return serve(settings, secrets, path, load)


def _read_password(password_file: Path | None) -> str | None:
    if password_file is not None:
        try:
            return password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            print(f"error: cannot read --password-file: {exc.strerror or exc}", file=sys.stderr)
            return None
    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        print("error: the passwords differ", file=sys.stderr)
        return None
    return password


async def admin_command(settings: Settings, secrets: Secrets,
                        action: Callable[[AsyncSession], Awaitable[str]]) -> int:
    """Run one account command in a write transaction on the configured database; 1 on a refused request."""
    from accounts.errors import DomainError
    from store import Database, migrate

    database = Database(settings.database, secrets.database_password)
    try:
        if settings.database.migrate_on_start:
            await migrate(database)
        async with database.write() as session:
            output = await action(session)
    except DomainError as exc:
        print(f"error: {exc.message}" + (f" ({exc.field})" if exc.field else ""), file=sys.stderr)
        return 1
    finally:
        await database.close()
    print(output)
    return 0


async def _create_user(session: AsyncSession, email: str, password: str, role: str,
                       display_name: str | None) -> str:
    from accounts.service import create_user

    user = await create_user(session, email, password, role, display_name)
    return f"created {user.role} {user.email} (id {user.id})"


async def _rotate_stream_key(session: AsyncSession, email: str) -> str:
    from accounts.errors import NotFound
    from accounts.service import find_user_by_email
    from accounts.stream_keys import rotate_stream_key

    user = await find_user_by_email(session, email)
    if user is None:
        raise NotFound("user_not_found", f"no account for {email}", "email")
    return await rotate_stream_key(session, user.id)


def check_config(settings: Settings, secrets: Secrets) -> int:
    effective = settings.model_dump(mode="json")
    effective["secrets"] = secrets.redacted()
    print("# configuration is valid; effective settings (secrets redacted):")
    print(yaml.safe_dump(effective, sort_keys=False), end="")
    return 0


async def run_migrations(settings: Settings, secrets: Secrets) -> int:
    from store import Database, current_revision, migrate

    database = Database(settings.database, secrets.database_password)
    try:
        await migrate(database)
        logger.info("database migrated", extra={"revision": await current_revision(database)})
    finally:
        await database.close()
    return 0


def serve(settings: Settings, secrets: Secrets, config_path: Path | None,
          load: Callable[[Path], Settings]) -> int:
    try:
        asyncio.run(_serve(settings, secrets, config_path, load))
    except OSError as exc:
        logger.error("cannot start", extra={"error": str(exc)})
        return 1
    return 0


async def _serve(settings: Settings, secrets: Secrets, config_path: Path | None,
                 load: Callable[[Path], Settings]) -> None:
    from web.access_log import JsonAccessLogger
    from web.app import build_app, reload_config

    app = build_app(settings, secrets, config_path, load)
    runner = web.AppRunner(app, handle_signals=False, access_log_class=JsonAccessLogger,
                           shutdown_timeout=settings.server.shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_config(app))
    try:
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        logger.info("listening", extra={"url": f"http://{settings.server.host}:{settings.server.port}"})
        await stop.wait()
        logger.info("shutting down: finishing in-flight requests",
                    extra={"timeout_seconds": settings.server.shutdown_timeout})
    finally:
        await runner.cleanup()
    logger.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
