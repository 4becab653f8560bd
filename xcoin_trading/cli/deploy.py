"""`xcoin deploy up|status|restart|down`: the production profile on one host (see xcoin_trading/deploy/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

ENV_FILE = click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default="deploy.env",
    show_default=True,
    envvar="XCOIN_DEPLOY_ENV",
    help="KEY=value file (mode 0600) with XCOIN_DATABASE_URL, XCOIN_REDIS_URL, XCOIN_ENCRYPTION_KEY, XCOIN_JWT_SECRET",
)
DIR = click.option(
    "--dir",
    "deploy_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    envvar="XCOIN_DEPLOY_DIR",
    help="where generated config, logs and local servers live [default: XCOIN_HOME/deploy]",
)


def _config(env_file: Path, deploy_dir: Path | None):
    from xcoin_trading.config import get_settings
    from xcoin_trading.deploy.config import load_config

    return load_config(env_file.resolve(), (deploy_dir or get_settings().home / "deploy").resolve())


def _report(checks, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            click.echo(f"{'ok ' if c.ok else 'BAD'}  {c.name:<{width}}  {c.detail}")
    if not all(c.ok for c in checks):
        sys.exit(1)


def register(main: click.Group) -> None:
    @main.group("deploy")
    def deploy() -> None:
        """Production profile on one host: Postgres, Redis, Dagster (code server, daemon, webserver)
        and the API, supervised by supervisord."""

    @deploy.command("up")
    @ENV_FILE
    @DIR
    @click.option("--timeout", default=180.0, show_default=True, help="seconds to wait for every check")
    @click.option("--json", "as_json", is_flag=True)
    def up(env_file: Path, deploy_dir: Path | None, timeout: float, as_json: bool) -> None:
        """Start everything (idempotent) and wait until every health check passes; exit 1 if one fails."""
        from xcoin_trading.deploy import up as bring_up

        cfg = _config(env_file, deploy_dir)
        click.echo(f"deploy folder: {cfg.dir} (logs in {cfg.dir / 'logs'})", err=True)
        _report(bring_up(cfg, timeout), as_json)

    @deploy.command("status")
    @ENV_FILE
    @DIR
    @click.option("--json", "as_json", is_flag=True)
    def status(env_file: Path, deploy_dir: Path | None, as_json: bool) -> None:
        """Health of every service; exit 1 if any is down."""
        from xcoin_trading.deploy.health import health

        _report(health(_config(env_file, deploy_dir)), as_json)

    @deploy.command("restart")
    @ENV_FILE
    @DIR
    @click.argument("service")
    def restart(env_file: Path, deploy_dir: Path | None, service: str) -> None:
        """Restart one service (postgres, redis, code_server, dagster_daemon, dagster_webserver, api)."""
        from xcoin_trading.deploy.render import GROUP
        from xcoin_trading.deploy.supervisor import rpc
        from xcoin_trading.errors import ValidationError

        cfg = _config(env_file, deploy_dir)
        server = rpc(cfg)
        names = {i["name"]: f"{i['group']}:{i['name']}" for i in server.getAllProcessInfo()}
        if service not in names:
            raise ValidationError("service", f"must be one of {', '.join(sorted(names))}, got {service!r}")
        server.stopProcess(names[service], True)
        server.startProcess(names[service], True)
        click.echo(
            f"{service} restarted" + (" (application group)" if names[service].startswith(GROUP) else "")
        )

    @deploy.command("automation")
    @ENV_FILE
    @DIR
    @click.argument("state", type=click.Choice(["on", "off"]))
    def automation_cmd(env_file: Path, deploy_dir: Path | None, state: str) -> None:
        """Turn live trading's sensors and schedules on (candle closes, failed runs, reconciler) or off."""
        from xcoin_trading.deploy.webserver import automation

        for name, status in automation(_config(env_file, deploy_dir), state == "on").items():
            click.echo(f"{name}: {status}")

    @deploy.command("down")
    @ENV_FILE
    @DIR
    def down(env_file: Path, deploy_dir: Path | None) -> None:
        """Stop every service and supervisord."""
        from xcoin_trading.deploy.supervisor import stop

        if not stop(_config(env_file, deploy_dir)):
            click.echo("error: supervisord did not stop within 60 s", err=True)
            sys.exit(1)
        click.echo("stopped")
