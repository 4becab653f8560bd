"""The production profile on one host: every long-lived service under supervisord.

Why supervisord, the env file, the services and their start order: docs/deployment.md. The env file
is checked in `config`, the files generated in `render`, supervisord driven in `supervisor`, the
services checked in `health`, the Dagster webserver called in `webserver`; `up` puts them in order.
"""

from __future__ import annotations

from xcoin_trading.deploy.config import DeployConfig
from xcoin_trading.deploy.health import Check, wait_healthy
from xcoin_trading.deploy.render import GROUP, render
from xcoin_trading.deploy.supervisor import init_local_postgres, prepare_databases, rpc, start_supervisor


def up(cfg: DeployConfig, timeout: float = 180) -> list[Check]:
    """Render, start supervisord (and the local servers), prepare the databases, start the services."""
    render(cfg)
    if cfg.local_servers:
        init_local_postgres(cfg)
    start_supervisor(cfg)
    prepare_databases(cfg)
    server = rpc(cfg)
    for info in server.getAllProcessInfo():
        if info["group"] == GROUP and info["statename"] not in ("RUNNING", "STARTING"):
            server.startProcess(f"{GROUP}:{info['name']}", False)
    return wait_healthy(cfg, timeout)
