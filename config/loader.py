"""Reads a YAML file into `Settings`, turning every problem into one line that names the key and its position."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.schema import Settings

DEFAULT_PATH = Path(__file__).with_name("default.yml")

# Keys that look like credentials: they belong in the environment or in a *_file, never in YAML.
_SECRET_KEY_NAME = re.compile(r"(password|secret|token|api_key|private_key)$")


class ConfigError(Exception):
    """A config file that cannot be used; `problems` holds one human-readable line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate `path` (the documented defaults when None)."""
    source = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
    return parse_settings(text, str(source))


def parse_settings(text: str, name: str = "<config>") -> Settings:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ConfigError([f"{where}: YAML syntax error: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: YAML error: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: the top level must be a mapping of sections, not {type(data).__name__}"])
    positions = _key_positions(root)
    problems = [
        f"{_where(name, positions, path)}: {'.'.join(path)}: secrets must not be in YAML; "
        "use the matching environment variable or a *_file key"
        for path in _secret_looking_keys(data)
    ]
    if problems:
        raise ConfigError(problems)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, name, positions)) from None


def apply_overrides(settings: Settings, overrides: dict[str, Any], name: str = "command line") -> Settings:
    """Set dotted keys (e.g. from --port) and validate the result like a file."""
    data = settings.model_dump()
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        section = data
        for part in parents:
            section = section[part]
        section[leaf] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, name, {})) from None


def _describe(exc: ValidationError, name: str, positions: dict[tuple[str, ...], tuple[int, int]]) -> list[str]:
    problems = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        key = ".".join(path) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        echo_input = error["type"] not in ("extra_forbidden", "missing") and path[-1:] != ("url",)
        if echo_input and "input" in error:  # never echo a URL: it may carry credentials
            message = f"{message} (got {error['input']!r})"
        problems.append(f"{_where(name, positions, path)}: {key}: {message}")
    return problems


def _where(name: str, positions: dict[tuple[str, ...], tuple[int, int]], path: tuple[str, ...]) -> str:
    for length in range(len(path), 0, -1):
        if path[:length] in positions:
            line, column = positions[path[:length]]
            return f"{name}:{line}:{column}"
    return name


def _key_positions(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[int, int]]:
    """Map each dotted key path to the 1-based line and column where the key is written."""
    positions: dict[tuple[str, ...], tuple[int, int]] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            positions[path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            positions.update(_key_positions(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, str(index))
            positions[path] = (item.start_mark.line + 1, item.start_mark.column + 1)
            positions.update(_key_positions(item, path))
    return positions


def _secret_looking_keys(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = (*prefix, str(key))
            if _SECRET_KEY_NAME.search(str(key)):
                found.append(path)
            found.extend(_secret_looking_keys(value, path))
    return found
