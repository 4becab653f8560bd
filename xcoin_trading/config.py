"""Settings read from the environment; every command, service and asset reads this one object.

With nothing set, everything lives under `XCOIN_HOME` (default `./.xcoin`): the SQLite store,
the Parquet lake, the DuckDB warehouse, the master key and the local Dagster home.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path

from xcoin_trading.errors import ConfigError

DEFAULT_API_URL = "https://api.coindcx.com"
DEFAULT_PUBLIC_URL = "https://public.coindcx.com"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _positive_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


class PathUnder:
    """A fixed path under another path attribute: the layout of a folder, one line per entry."""

    def __init__(self, base: str, name: str) -> None:
        self.base, self.name = base, name

    def __get__(self, owner: object, owner_type: type | None = None) -> Path:
        return getattr(owner, self.base) / self.name


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url_override: str | None = None
    redis_url: str | None = None
    lake_dir_override: str | None = None
    # Raw env value: comma-separated base64 keys, newest LAST. Never logged (repr=False).
    encryption_keys_b64: str | None = field(default=None, repr=False)
    api_url: str | None = None
    public_url: str | None = None
    max_leverage: Decimal = Decimal("20")
    jwt_secret: str | None = field(default=None, repr=False)
    fanout_concurrency: int = 200  # requests in flight during one signal's fan-out
    fanout_shards: int = 1  # a candle's fan-out split by account into this many steps (live/shards.py)
    password_check_concurrency: int = 4  # argon2 hashes/verifications at once per API process
    max_body_bytes: int = 1024 * 1024  # request bodies above this answer 413, unread
    # OAuth login with Google (all three set → enabled); see docs/api.md ("Choices worth knowing").
    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    google_redirect_uri: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(_env("XCOIN_HOME") or ".xcoin").expanduser().resolve()
        return cls(
            home=home,
            database_url_override=_env("XCOIN_DATABASE_URL"),
            redis_url=_env("XCOIN_REDIS_URL"),
            lake_dir_override=_env("XCOIN_LAKE_DIR"),
            encryption_keys_b64=_env("XCOIN_ENCRYPTION_KEY"),
            api_url=_env("COINDCX_API_URL"),
            public_url=_env("COINDCX_PUBLIC_URL"),
            max_leverage=Decimal(_env("XCOIN_MAX_LEVERAGE") or "20"),
            jwt_secret=_env("XCOIN_JWT_SECRET"),
            fanout_concurrency=int(_env("XCOIN_FANOUT_CONCURRENCY") or "200"),
            fanout_shards=_positive_int("XCOIN_FANOUT_SHARDS", 1),
            password_check_concurrency=_positive_int("XCOIN_PASSWORD_CHECKS", 4),
            max_body_bytes=_positive_int("XCOIN_MAX_BODY_BYTES", 1024 * 1024),
            google_client_id=_env("XCOIN_GOOGLE_CLIENT_ID"),
            google_client_secret=_env("XCOIN_GOOGLE_CLIENT_SECRET"),
            google_redirect_uri=_env("XCOIN_GOOGLE_REDIRECT_URI"),
        )

    @property
    def embedded(self) -> bool:
        """True when no database server is configured: SQLite, in-process everything."""
        return self.database_url_override is None

    @cached_property
    def database_url(self) -> str:
        url = self.database_url_override
        if url is None:
            return f"sqlite:///{self.home / 'xcoin.sqlite'}"
        if url.startswith(("postgres://", "postgresql://")):
            # SQLAlchemy 2.1 would pick psycopg 3, which we do not ship: name the driver.
            raise ConfigError(
                "XCOIN_DATABASE_URL must name its driver, e.g. postgresql+psycopg2://user@host/db"
            )
        return url

    @property
    def lake_dir(self) -> Path:
        return Path(self.lake_dir_override).resolve() if self.lake_dir_override else self.home / "lake"

    warehouse_path = PathUnder("home", "warehouse.duckdb")
    catalog_path = PathUnder("home", "catalog.duckdb")
    master_key_path = PathUnder("home", "master.key")
    dagster_home = PathUnder("home", "dagster")
    artifacts_dir = PathUnder("home", "artifacts")

    def ensure_dirs(self) -> None:
        private_dir(self.home)
        for path in (self.lake_dir, self.dagster_home, self.artifacts_dir):
            path.mkdir(parents=True, exist_ok=True)


def private_dir(path: Path) -> Path:
    """`path` created (or tightened) to 0700: XCOIN_HOME holds the store, keys and secrets."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> None:
    """Create `path` empty as 0600 if missing, else tighten it to 0600 (it holds secrets)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


_settings: Settings | None = None


def get_settings() -> Settings:
    """Process-wide settings, read once from the environment."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def reset_settings() -> None:
    """Forget cached settings (tests change the environment)."""
    global _settings
    _settings = None
