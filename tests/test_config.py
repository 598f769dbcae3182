"""The documented file equals the code's defaults; every kind of bad config names its key; secrets stay out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from config import DEFAULT_PATH, ConfigError, Settings, live_keys, load_secrets, load_settings, parse_settings
from config.reload import flatten


def test_default_file_equals_schema_defaults_key_by_key() -> None:
    documented = flatten(yaml.safe_load(DEFAULT_PATH.read_text()))
    defaults = flatten(Settings().model_dump(mode="json"))
    assert sorted(documented) == sorted(defaults), "a key is missing from one side"
    for key, value in defaults.items():
        assert documented[key] == value, f"{key}: default.yml says {documented[key]!r}, the schema {value!r}"
    assert load_settings() == Settings()


def _comment_above(lines: list[str], number: int) -> str:
    """The comment block right above line `number` (0-based), joined."""
    block = []
    while number > 0 and lines[number - 1].strip().startswith("#"):
        number -= 1
        block.append(lines[number])
    return " ".join(reversed(block))


def test_every_documented_key_has_a_comment_and_live_keys_say_so() -> None:
    lines = DEFAULT_PATH.read_text().splitlines()
    marked_live = set()
    path: list[str] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([a-z0-9_]+):", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        path = [*path[:depth], match.group(2)]
        if line.rstrip().endswith(":"):
            continue  # a section heading
        comment = _comment_above(lines, number)
        assert comment, f"default.yml line {number + 1}: {'.'.join(path)} has no comment above it"
        if "(live)" in comment:
            marked_live.add(".".join(path))
    assert marked_live == live_keys(), "the (live) marks in default.yml differ from the schema"


@pytest.mark.parametrize(("text", "expected"), [
    ("server:\n  port: [1, 2\n", r"^f\.yml:\d+:\d+: YAML syntax error"),
    ("server:\n  prot: 8080\n", r"^f\.yml:2:3: server\.prot: unknown key$"),
    ("server:\n  port: eighty\n", r"^f\.yml:2:3: server\.port: Input should be a valid integer"),
    ("server:\n  port: 70000\n", r"^f\.yml:2:3: server\.port: Input should be less than or equal to 65535"),
    ("logging:\n  level: loud\n", r"^f\.yml:2:3: logging\.level: Input should be 'debug', 'info'"),
    ("jobs:\n  lease_seconds: 0\n", r"^f\.yml:2:3: jobs\.lease_seconds: Input should be greater than or equal to 1"),
    ("redis:\n  url: http://x\n", r"^f\.yml:2:3: redis\.url: must be empty or start with redis://"),
    ("media:\n  ice:\n    host_addresses: 5\n",
     r"^f\.yml:3:5: media\.ice\.host_addresses: Input should be a valid list"),
    ("- server\n", r"^f\.yml: the top level must be a mapping"),
])
def test_bad_config_names_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "f.yml")
    assert len(caught.value.problems) == 1
    assert re.search(expected, caught.value.problems[0]), caught.value.problems[0]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("server:\n  port: 0\n  bogus: 1\nchat:\n  max_length: -1\n", "f.yml")
    keys = [problem.split(": ")[1] for problem in caught.value.problems]
    assert sorted(keys) == ["chat.max_length", "server.bogus", "server.port"]


def test_secrets_in_yaml_are_refused_and_passwords_in_urls_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("auth:\n  secret: hunter2\n", "f.yml")
    assert "auth.secret: secrets must not be in YAML" in caught.value.problems[0]
    with pytest.raises(ConfigError) as caught:
        parse_settings("database:\n  url: postgresql+asyncpg://app:hunter2@db/pinstream\n", "f.yml")
    assert "PINSTREAM_DATABASE_PASSWORD" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_secrets_come_from_environment_or_files(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    settings = parse_settings(f"auth:\n  secret_key_file: {key_file}\n")
    assert load_secrets(settings, {}).secret_key == "from-file"
    secrets = load_secrets(settings, {"PINSTREAM_SECRET_KEY": "from-env", "PINSTREAM_REDIS_PASSWORD": "pw"})
    assert secrets.secret_key == "from-env"
    assert "from-env" not in repr(secrets) and "pw" not in str(secrets.redacted())
    missing = parse_settings("database:\n  password_file: /nonexistent/pw\n")
    with pytest.raises(ConfigError, match=r"database\.password_file: cannot read"):
        load_secrets(missing, {})
