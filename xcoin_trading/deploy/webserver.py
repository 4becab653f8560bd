"""The Dagster webserver's GraphQL API as the deploy commands use it: health queries and turning the
live sensors and schedules on or off.
"""

from __future__ import annotations

import time
from functools import partial

from xcoin_trading.deploy.config import DeployConfig
from xcoin_trading.errors import ConfigError


def dagster_graphql(cfg: DeployConfig, query: str, variables: dict, attempts: int = 5) -> dict:
    """One GraphQL call to the webserver. Retried: after a Postgres restart each of the webserver's
    pooled connections fails once before it is replaced."""
    import httpx

    for attempt in range(attempts):
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{cfg.dagster_port}/graphql",
                json={"query": query, "variables": variables},
                timeout=30,
            )
            answer.raise_for_status()
            body = answer.json()
            if not body.get("errors"):
                return body["data"]
            reason = str(body["errors"][0].get("message", "?"))[:300]
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
        if attempt + 1 < attempts:
            time.sleep(1)
    raise ConfigError(f"the Dagster webserver refused: {reason}")


DAEMONS_QUERY = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
LOCATIONS_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
    " locationOrLoadError { __typename } } } } }"
)


# What runs live trading by itself; off until the operator turns it on (`xcoin deploy automation on`).
SENSORS = ("candle_close_sensor", "live_run_failure_sensor")
SCHEDULES = ("reconcile_every_minute",)
_SELECTOR = {"repositoryLocationName": "xcoin", "repositoryName": "__repository__"}


def automation(cfg: DeployConfig, on: bool) -> dict[str, str]:
    """Start (or reset to their default, stopped) the live sensors and schedules through the webserver."""
    call = partial(dagster_graphql, cfg)
    verb = "start" if on else "reset"
    states: dict[str, str] = {}
    for kind, result, names in (
        ("Sensor", "Sensor", SENSORS),
        ("Schedule", "ScheduleStateResult", SCHEDULES),
    ):
        key = kind.lower()
        for name in names:
            data = call(
                f"mutation($s: {kind}Selector!) {{ {verb}{kind}({key}Selector: $s) {{ __typename"
                f" ... on {result} {{ {key}State {{ status }} }} ... on PythonError {{ message }} }} }}",
                {"s": {**_SELECTOR, f"{key}Name": name}},
            )[f"{verb}{kind}"]
            states[name] = (data.get(f"{key}State") or {}).get("status") or data.get(
                "message", data["__typename"]
            )
    return states
