"""The deploy env file read and checked into a `DeployConfig`; where the installed commands are.

Refused before anything starts: a readable-by-others file, a missing secret, a bad port.
"""

from __future__ import annotations

import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from xcoin_trading.config import PathUnder
from xcoin_trading.errors import ConfigError

REQUIRED = ("XCOIN_DATABASE_URL", "XCOIN_REDIS_URL", "XCOIN_ENCRYPTION_KEY", "XCOIN_JWT_SECRET")
PORT_DEFAULTS = {"XCOIN_API_PORT": 8000, "XCOIN_DAGSTER_PORT": 3000, "XCOIN_CODE_SERVER_PORT": 4266}


@dataclass(frozen=True)
class DeployConfig:
    """What one env file says, checked: every service's address and the folder state lives in."""

    dir: Path
    env: dict[str, str]  # the services' environment: never written to a generated file
    store_url: URL
    dagster_url: URL
    redis_url: str
    local_servers: bool
    api_workers: int
    api_port: int
    dagster_port: int
    code_server_port: int

    dagster_home = PathUnder("dir", "dagster_home")
    socket = PathUnder("dir", "supervisor.sock")
    conf = PathUnder("dir", "supervisord.conf")


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {raw!r}")
    return int(raw)


def load_config(env_file: Path, deploy_dir: Path) -> DeployConfig:
    """Read and check the env file; refuse it when others may read it or a required key is missing."""
    from dotenv import dotenv_values

    if not env_file.is_file():
        raise ConfigError(f"env file {env_file} does not exist")
    if env_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"env file {env_file} holds secrets: make it readable by its owner only (chmod 600)"
        )
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        raise ConfigError(f"env file {env_file} lacks {', '.join(missing)}")
    store = make_url(values["XCOIN_DATABASE_URL"])
    if store.drivername != "postgresql+psycopg2":
        raise ConfigError("XCOIN_DATABASE_URL must be postgresql+psycopg2://… in the production profile")
    dagster = (
        make_url(values["XCOIN_DAGSTER_DATABASE_URL"])
        if values.get("XCOIN_DAGSTER_DATABASE_URL")
        else store.set(database=f"{store.database}_dagster")
    )
    if dagster.database == store.database:
        raise ConfigError("XCOIN_DAGSTER_DATABASE_URL must name another database than XCOIN_DATABASE_URL")
    ports = {name: _int(values, name, default, 1, 65535) for name, default in PORT_DEFAULTS.items()}
    env = {
        **values,
        "XCOIN_DAGSTER_DATABASE_URL": dagster.render_as_string(hide_password=False),
        "DAGSTER_HOME": str(deploy_dir / "dagster_home"),
        "XCOIN_HOME": values.get("XCOIN_HOME") or str(deploy_dir / "home"),
    }
    return DeployConfig(
        dir=deploy_dir,
        env=env,
        store_url=store,
        dagster_url=dagster,
        redis_url=values["XCOIN_REDIS_URL"],
        local_servers=values.get("XCOIN_LOCAL_SERVERS", "0") in ("1", "true", "yes"),
        api_workers=_int(values, "XCOIN_API_WORKERS", 2, 1, 64),
        api_port=ports["XCOIN_API_PORT"],
        dagster_port=ports["XCOIN_DAGSTER_PORT"],
        code_server_port=ports["XCOIN_CODE_SERVER_PORT"],
    )


def bin_path(name: str) -> str:
    """An installed command: next to this interpreter (the venv) first, then on PATH."""
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else (shutil.which(name) or name)


def pg_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: float(p.parent.name))
    if not candidates:
        raise ConfigError("XCOIN_LOCAL_SERVERS=1 needs PostgreSQL (apt-get install postgresql)")
    return candidates[-1]
