"""The typed settings tree: the one place that says which options exist, their types, ranges and defaults.

`config/default.yml` documents the same tree; a test keeps the two equal key by key.
A field marked `live()` is applied by hot reload without a restart; every other field needs one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LIVE = "live"


def live(default: Any, **kwargs: Any) -> Any:
    """A field that hot reload may change while the server runs."""
    return Field(default, json_schema_extra={"reload": LIVE}, **kwargs)


def _refuse_password_in_url(url: str, env_name: str) -> None:
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority and ":" in authority.split("@", 1)[0]:
        raise ValueError(f"must not contain a password; set {env_name} or the password_file key instead")


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors and values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ServerSettings(Section):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = live("")
    cors_origins: list[str] = live([])
    shutdown_timeout: float = Field(10.0, ge=0, le=300)
    max_body_bytes: int = live(1_048_576, ge=1024, le=1_073_741_824)

    @field_validator("public_url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return check_origins(value)


def check_origins(value: list[str]) -> list[str]:
    for origin in value:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or '*'")
    return value


class DatabaseSettings(Section):
    url: str = "sqlite+aiosqlite:///data/pinstream.db"
    password_file: str = ""
    pool_size: int = Field(10, ge=1, le=200)
    busy_timeout_ms: int = Field(5000, ge=0, le=600_000)
    writer_wait_seconds: float = Field(30.0, gt=0, le=600)
    migrate_on_start: bool = True

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        _refuse_password_in_url(value, "PINSTREAM_DATABASE_PASSWORD")
        return value


class RedisSettings(Section):
    url: str = ""
    password_file: str = ""
    stream_max_length: int = Field(10_000, ge=100, le=10_000_000)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be empty or start with redis://, rediss:// or unix://")
        _refuse_password_in_url(value, "PINSTREAM_REDIS_PASSWORD")
        return value


class EventsSettings(Section):
    relay_interval_ms: int = live(200, ge=10, le=60_000)
    relay_batch: int = live(500, ge=1, le=10_000)
    replay_history: int = Field(1000, ge=0, le=1_000_000)
    outbox_retention_hours: int = live(24, ge=1, le=24 * 365)


class JobsSettings(Section):
    poll_interval_ms: int = live(500, ge=10, le=60_000)
    lease_seconds: int = live(30, ge=1, le=3600)
    batch: int = live(50, ge=1, le=1000)
    max_attempts: int = live(5, ge=1, le=100)
    retry_backoff_seconds: int = live(5, ge=0, le=3600)


class IceSettings(Section):
    host_addresses: list[str] = []
    stun_urls: list[str] = live([])
    port_min: int = Field(0, ge=0, le=65535)
    port_max: int = Field(0, ge=0, le=65535)
    public_address: str = ""

    @field_validator("stun_urls")
    @classmethod
    def _stun(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "stuns:")):
                raise ValueError(f"{url!r} is not a stun: or stuns: URL")
        return value

    @model_validator(mode="after")
    def _port_range(self) -> IceSettings:
        if self.port_max < self.port_min:
            raise ValueError(f"port_max ({self.port_max}) is below port_min ({self.port_min})")
        return self


class TurnSettings(Section):
    """TURN relays for clients that cannot reach the media server directly (UDP blocked, strict NAT).

    Clients get short-lived credentials derived from a secret shared with the TURN server (the TURN REST
    scheme of coturn's `use-auth-secret`); the secret itself is loaded by `config.secrets`, never from here.
    """

    urls: list[str] = live([])
    credential_ttl_seconds: int = live(3600, ge=60, le=7 * 86_400)
    secret_file: str = ""

    @field_validator("urls")
    @classmethod
    def _turn(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(f"{url!r} is not a turn: or turns: URL")
            if any(character in url for character in '<>" '):
                raise ValueError(f"{url!r} contains a character not allowed in a URL")
        return value


class MediaSettings(Section):
    workers: int = Field(1, ge=1, le=64)
    silence_timeout_seconds: float = Field(15.0, ge=1, le=3600)
    connect_timeout_seconds: float = Field(30.0, ge=1, le=600)
    bandwidth_floor_kbps: int = Field(300, ge=0, le=100_000)
    ice: IceSettings = IceSettings()
    turn: TurnSettings = TurnSettings()


class HlsSettings(Section):
    enabled: bool = True
    segment_seconds: float = Field(2.0, ge=0.5, le=30)
    window_segments: int = Field(6, ge=2, le=100)
    directory: str = "data/hls"
    poster_seconds: float = Field(10.0, ge=1, le=3600)
    cors_origins: list[str] = live(["*"])

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return check_origins(value)


class RecordingsSettings(Section):
    enabled: bool = True
    directory: str = "data/recordings"
    retention_days: int = live(30, ge=0, le=36_500)


class ProductImageSettings(Section):
    max_bytes: int = live(10_485_760, ge=1024, le=104_857_600)
    max_pixels: int = live(40_000_000, ge=1, le=400_000_000)
    max_side: int = live(10_000, ge=16, le=65_535)
    thumbnail_sizes: list[int] = live([160, 480])
    per_product: int = live(10, ge=1, le=100)

    @field_validator("thumbnail_sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        if not 1 <= len(value) <= 5 or any(not 16 <= size <= 2048 for size in value):
            raise ValueError("give 1-5 sizes, each 16-2048 pixels")
        if len(set(value)) != len(value):
            raise ValueError("sizes must differ")
        return sorted(value)


class CommerceSettings(Section):
    currency: str = live("USD", pattern=r"^[A-Z]{3}$")
    hold_seconds: int = live(300, ge=10, le=86_400)
    tax_rate_basis_points: int = live(0, ge=0, le=10_000)
    images: ProductImageSettings = ProductImageSettings()


class PaymentsSettings(Section):
    provider: Literal["test", "stripe"] = "test"
    stripe_secret_key_file: str = ""
    stripe_webhook_secret_file: str = ""


class AuthSettings(Section):
    secret_key_file: str = ""
    access_token_minutes: int = live(15, ge=1, le=1440)
    refresh_token_days: int = live(30, ge=1, le=365)
    cookie_secure: bool = live(False)
    guest_token_hours: int = live(12, ge=1, le=168)


class RoomsSettings(Section):
    create_on_publish: bool = live(True)
    cohosting: bool = live(True)
    end_grace_seconds: int = live(30, ge=0, le=3600)


class RateLimitSettings(Section):
    login_per_minute: int = live(10, ge=1, le=100_000)
    signup_per_hour: int = live(20, ge=1, le=100_000)
    writes_per_minute: int = live(120, ge=1, le=100_000)
    reserves_per_second: int = live(20, ge=1, le=100_000)


class ChatSettings(Section):
    max_length: int = live(500, ge=1, le=10_000)
    messages_per_10s: int = live(5, ge=1, le=1000)
    slow_mode_seconds: int = live(0, ge=0, le=3600)
    history: int = live(50, ge=0, le=1000)
    banned_words: list[str] = live([])
    links: Literal["allow", "block"] = live("allow")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = live("info")
    format: Literal["json", "text"] = live("json")
    access_log: bool = live(True)


class OverlaySettings(Section):
    """The live overlay around a show: pins, stock updates, reactions, presence, slow clients."""

    max_pinned: int = live(3, ge=1, le=20)
    low_stock: int = live(5, ge=0, le=100_000)
    stock_updates_per_second: float = live(4.0, gt=0, le=100)
    reaction_window_ms: int = live(1000, ge=100, le=60_000)
    presence_interval_ms: int = live(1000, ge=100, le=60_000)
    client_queue_max: int = Field(256, ge=8, le=100_000)


class Settings(Section):
    data_dir: str = "data"
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    events: EventsSettings = EventsSettings()
    jobs: JobsSettings = JobsSettings()
    media: MediaSettings = MediaSettings()
    hls: HlsSettings = HlsSettings()
    recordings: RecordingsSettings = RecordingsSettings()
    commerce: CommerceSettings = CommerceSettings()
    payments: PaymentsSettings = PaymentsSettings()
    auth: AuthSettings = AuthSettings()
    rooms: RoomsSettings = RoomsSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    chat: ChatSettings = ChatSettings()
    logging: LoggingSettings = LoggingSettings()
    overlay: OverlaySettings = OverlaySettings()


def live_keys(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    """Dotted paths of every field that hot reload applies without a restart."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= live_keys(annotation, f"{path}.")
        elif isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("reload") == LIVE:
            keys.add(path)
    return keys
