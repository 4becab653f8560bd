"""`xcoin deploy status`: one check per service (process, store, Redis, Dagster, API).

A detail never holds a URL, a password or an exception text: it is printed and may be pasted.
"""

from __future__ import annotations

import time
import xmlrpc.client
from dataclasses import dataclass

from xcoin_trading.deploy.config import DeployConfig
from xcoin_trading.deploy.supervisor import rpc
from xcoin_trading.deploy.webserver import DAEMONS_QUERY, LOCATIONS_QUERY, dagster_graphql


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _probe(name: str, fn) -> Check:
    try:
        return Check(name, *fn())
    except Exception as exc:  # a probe that raises is a failed check; its type is enough of a reason
        return Check(name, False, f"unreachable ({type(exc).__name__})")


def health(cfg: DeployConfig) -> list[Check]:
    """One check per service; nothing in a detail is a URL, a password or an exception text."""
    import httpx
    import redis
    import sqlalchemy as sa

    checks: list[Check] = []
    try:
        infos = rpc(cfg).getAllProcessInfo()
    except (OSError, xmlrpc.client.Fault):
        return [Check("supervisord", False, "not running")]
    for info in infos:
        checks.append(Check(f"process {info['name']}", info["statename"] == "RUNNING", info["statename"]))

    def store():
        engine = sa.create_engine(cfg.store_url, pool_pre_ping=True)
        try:
            with engine.connect() as conn:
                version = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        finally:
            engine.dispose()
        return True, f"migrated to {version}"

    def cache():
        client = redis.Redis.from_url(cfg.redis_url, socket_timeout=2)
        try:
            return bool(client.ping()), "PONG"
        finally:
            client.close()

    base = f"http://127.0.0.1:{cfg.dagster_port}"

    def graphql(query: str) -> dict:
        return dagster_graphql(cfg, query, {})

    def webserver():
        answer = httpx.get(f"{base}/server_info", timeout=5)
        return answer.status_code == 200, f"dagster {answer.json().get('dagster_version', '?')}"

    def code_location():
        entries = graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
        loaded = [e for e in entries if e["locationOrLoadError"]["__typename"] == "RepositoryLocation"]
        return bool(loaded), ", ".join(f"{e['name']} {e['loadStatus'].lower()}" for e in entries) or "none"

    def daemons():
        statuses = graphql(DAEMONS_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        sick = [s["daemonType"] for s in statuses if s["required"] and not s["healthy"]]
        return not sick, ("unhealthy: " + ", ".join(sick)) if sick else f"{len(statuses)} daemons healthy"

    def api():
        # "degraded" while the exchange is unreachable still serves users: the store is what it needs.
        body = httpx.get(f"http://127.0.0.1:{cfg.api_port}/health", timeout=5).json()
        return body["checks"]["database"]["status"] == "ok", body["status"]

    checks += [
        _probe("store (Postgres)", store),
        _probe("redis", cache),
        _probe("dagster webserver", webserver),
        _probe("dagster code location", code_location),
        _probe("dagster daemon", daemons),
        _probe("api", api),
    ]
    return checks


def wait_healthy(cfg: DeployConfig, timeout: float) -> list[Check]:
    deadline = time.monotonic() + timeout
    while True:
        checks = health(cfg)
        if all(c.ok for c in checks) or time.monotonic() > deadline:
            return checks
        time.sleep(1)
