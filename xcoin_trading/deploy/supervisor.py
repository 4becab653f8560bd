"""supervisord and the local Postgres on this host: start, talk to (XML-RPC over its socket), stop;
the databases created and migrated before the services start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import xmlrpc.client
from typing import Any

from xcoin_trading.deploy.config import DeployConfig, bin_path, pg_bindir
from xcoin_trading.errors import ConfigError


def rpc(cfg: DeployConfig) -> Any:
    """supervisord's XML-RPC interface over its Unix socket (its answers are untyped XML-RPC values)."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{cfg.socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def supervisor_running(cfg: DeployConfig) -> bool:
    try:
        return rpc(cfg).getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Fault):
        return False


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def init_local_postgres(cfg: DeployConfig) -> None:
    data = cfg.dir / "pg" / "data"
    if (data / "PG_VERSION").exists():
        return
    data.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data.parent, "postgres", "postgres")
    user = cfg.store_url.username or "postgres"
    done = subprocess.run(
        _as_postgres(
            [str(pg_bindir() / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]
        ),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise ConfigError(f"initdb failed: {done.stderr.strip()[-500:]}")


def start_supervisor(cfg: DeployConfig) -> None:
    if supervisor_running(cfg):
        return
    env = {**os.environ, **cfg.env}
    subprocess.run([bin_path("supervisord"), "-c", str(cfg.conf)], check=True, env=env)
    deadline = time.monotonic() + 20
    while not supervisor_running(cfg):
        if time.monotonic() > deadline:
            raise ConfigError(f"supervisord did not start: see {cfg.dir / 'logs' / 'supervisord.log'}")
        time.sleep(0.2)


def prepare_databases(cfg: DeployConfig, timeout: float = 60) -> None:
    """Wait for Postgres, create the store and Dagster databases if missing, migrate the store."""
    import sqlalchemy as sa
    from sqlalchemy.exc import OperationalError

    admin = sa.create_engine(cfg.store_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with admin.connect() as conn:
                    existing = set(conn.scalars(sa.text("SELECT datname FROM pg_database")))
                    for name in (cfg.store_url.database, cfg.dagster_url.database):
                        if name not in existing:
                            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                break
            except OperationalError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"Postgres did not answer within {timeout:.0f} s") from None
                time.sleep(0.5)
    finally:
        admin.dispose()
    subprocess.run(
        [bin_path("xcoin"), "db", "upgrade"], check=True, env={**os.environ, **cfg.env}, capture_output=True
    )


def stop(cfg: DeployConfig, timeout: float = 60) -> bool:
    """Stop every service and supervisord itself; True once its pid is gone."""
    if not supervisor_running(cfg):
        return True
    pid = int((cfg.dir / "supervisord.pid").read_text().strip())
    rpc(cfg).shutdown()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
