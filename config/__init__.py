"""Settings: the YAML schema, its loader, secrets from the environment, hot reload and log setup."""

from config.loader import DEFAULT_PATH, ConfigError, apply_overrides, load_settings, parse_settings
from config.reload import ConfigHolder, ConfigWatcher, ReloadResult
from config.schema import Settings, live_keys
from config.secrets import Secrets, load_secrets

__all__ = [
    "DEFAULT_PATH",
    "ConfigError",
    "ConfigHolder",
    "ConfigWatcher",
    "ReloadResult",
    "Secrets",
    "Settings",
    "apply_overrides",
    "live_keys",
    "load_secrets",
    "load_settings",
    "parse_settings",
]
