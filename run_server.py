#!/usr/bin/env python3
"""Pinstream: start the server, or run an admin command.

    python run_server.py [--config PATH] [--host H] [--port P]      serve (default http://127.0.0.1:8080)
    python run_server.py check-config [PATH]                        validate, print effective settings
    python run_server.py migrate [--config PATH]                    apply database migrations

A config problem exits with status 2 and one line per problem on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from aiohttp import web

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
    return serve(settings, secrets, path, load)


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
