"""Credentials, read from environment variables or from the files the config names, never from YAML.

A `Secrets` never prints its values: its repr and `redacted()` show only whether each one is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from secrets import token_urlsafe

from config.loader import ConfigError
from config.schema import Settings


@dataclass(frozen=True, repr=False)
class Secrets:
    secret_key: str | None = None
    """Signs access tokens and guest identities (PINSTREAM_SECRET_KEY or auth.secret_key_file)."""
    database_password: str | None = None
    """PINSTREAM_DATABASE_PASSWORD or database.password_file."""
    redis_password: str | None = None
    """PINSTREAM_REDIS_PASSWORD or redis.password_file."""
    stripe_secret_key: str | None = None
    """PINSTREAM_STRIPE_SECRET_KEY or payments.stripe_secret_key_file."""
    stripe_webhook_secret: str | None = None
    """PINSTREAM_STRIPE_WEBHOOK_SECRET or payments.stripe_webhook_secret_file."""
    turn_secret: str | None = None
    """Shared with the TURN server, which checks the short-lived credentials derived from it
    (PINSTREAM_TURN_SECRET or media.turn.secret_file)."""

    def redacted(self) -> dict[str, str]:
        return {f.name: ("(set)" if getattr(self, f.name) else "(unset)") for f in fields(self)}

    def __repr__(self) -> str:
        return f"Secrets({self.redacted()})"

    def values(self) -> list[str]:
        """Every secret that is set, so log redaction can mask them wherever they appear."""
        return [value for f in fields(self) if (value := getattr(self, f.name))]


# (field, environment variable, dotted config key of the *_file alternative)
_SOURCES = (
    ("secret_key", "PINSTREAM_SECRET_KEY", "auth.secret_key_file"),
    ("database_password", "PINSTREAM_DATABASE_PASSWORD", "database.password_file"),
    ("redis_password", "PINSTREAM_REDIS_PASSWORD", "redis.password_file"),
    ("stripe_secret_key", "PINSTREAM_STRIPE_SECRET_KEY", "payments.stripe_secret_key_file"),
    ("stripe_webhook_secret", "PINSTREAM_STRIPE_WEBHOOK_SECRET", "payments.stripe_webhook_secret_file"),
    ("turn_secret", "PINSTREAM_TURN_SECRET", "media.turn.secret_file"),
)


def load_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> Secrets:
    """The environment wins over a file; a named file that cannot be read is a config error naming its key."""
    env = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    problems = []
    for name, variable, file_key in _SOURCES:
        value = env.get(variable) or None
        file_name: str = _dotted(settings, file_key)
        if value is None and file_name:
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                problems.append(f"{file_key}: cannot read {file_name!r}: {exc.strerror or exc}")
        values[name] = value
    turn_file_failed = any(problem.startswith("media.turn.secret_file:") for problem in problems)
    if settings.media.turn.urls and not values["turn_secret"] and not turn_file_failed:
        # TURN servers configured without the secret would hand out credentials that every server refuses.
        problems.append("media.turn.urls: TURN needs the shared secret: set PINSTREAM_TURN_SECRET or "
                        "media.turn.secret_file")
    if problems:
        raise ConfigError(problems)
    return Secrets(**values)


def _dotted(settings: Settings, key: str) -> str:
    value: object = settings
    for part in key.split("."):
        value = getattr(value, part)
    return str(value)


SECRET_KEY_FILE = "secret_key"


def ensure_secret_key(settings: Settings, secrets: Secrets) -> Secrets:
    """`secrets` with a signing key: the configured one, else the one kept in `{data_dir}/secret_key`, which
    is generated (readable by its owner only) the first time. Two processes starting at once agree: the file
    is created exclusively and the loser reads the winner's key."""
    if secrets.secret_key:
        return secrets
    path = Path(settings.data_dir) / SECRET_KEY_FILE
    key = _read_key(path)
    if key is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        generated = token_urlsafe(48)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = _read_key(path)
            if key is None:
                raise ConfigError([f"data_dir: {path} exists but holds no secret key"]) from None
        else:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(generated + "\n")
            key = generated
    return replace(secrets, secret_key=key)


def _read_key(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError([f"data_dir: cannot read {str(path)!r}: {exc.strerror or exc}"]) from None
