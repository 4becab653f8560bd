"""Run workers forked from the warm run process (xcoin_pipelines/launcher.py) behave as Dagster's own:
a real `dagster dev` on the demo's candles with the example dagster.yaml (run monitoring every 2 s);
success, a failing run, cancellation from the UI and a killed worker, each checked in the event log."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from tests.fixtures.dagster_ui import (
    BACKTEST_KEY,
    EXAMPLE_YAML,
    DagsterDev,
    dagster_dev,
    demo_candles,
    latest_materialization,
    launch_backtest,
    wait_run,
)
from xcoin_pipelines.launcher import PID_TAG, _proc_start

pytestmark = pytest.mark.slow

SWEEP_KEY = ["backtests", "param_sweep"]
# 9,900 backtests (the limit is 10,000) on one thread: still running when the test stops it
# Long enough to be terminated or killed mid-step: a strategy without a kernel-form fast path (the
# SMA sweep of this grid now ends within a second or two, sometimes before a terminate lands).
LONG_SWEEP = {"strategy": {"atr_trend": {}}, "grid": "fast=2:100:1;slow=101:200:1", "workers": 1}
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename
  ... on TerminateRunFailure { message } ... on PythonError { message } } }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[DagsterDev]:
    home = tmp_path_factory.mktemp("warm")
    demo_candles(home)
    (home / "dagster").mkdir(exist_ok=True)
    yaml = EXAMPLE_YAML.read_text().replace("poll_interval_seconds: 30", "poll_interval_seconds: 2")
    assert "poll_interval_seconds: 2" in yaml
    (home / "dagster" / "dagster.yaml").write_text(yaml)
    with dagster_dev(home, instance_yaml=False) as dev:
        yield dev


def _messages(home: Path, run_id: str) -> list[tuple[str, str]]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        out = []
        for e in instance.all_logs(run_id):
            if e.dagster_event is None:
                continue
            message = e.message or ""
            if e.dagster_event.is_step_failure:  # the reason the user reads under the failed step
                data = e.dagster_event.step_failure_data
                reason = data.user_failure_data.description if data.user_failure_data else None
                message += f" {reason or (data.error.message if data.error else '')}"
            out.append((e.dagster_event.event_type_value, message))
        return out


def _launch_sweep(server: DagsterDev, config: dict) -> str:
    from tests.fixtures.dagster_ui import LAUNCH, asset_job_selector

    params = {
        "selector": asset_job_selector(SWEEP_KEY),
        "runConfigData": {"ops": {"backtests__param_sweep": {"config": config}}},
        "mode": "default",
    }
    result = server.graphql(LAUNCH, {"p": params})["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def _wait_step_started(server: DagsterDev, run_id: str, timeout: float = 240) -> int:
    """The worker's pid once its step runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(kind == "STEP_START" for kind, _ in _messages(server.home, run_id)):
            run = wait_run_tags(server, run_id)
            return int(run[PID_TAG])
        time.sleep(0.3)
    raise TimeoutError(f"run {run_id} did not start its step in {timeout} s")


def wait_run_tags(server: DagsterDev, run_id: str) -> dict[str, str]:
    with dg.DagsterInstance.from_config(str(server.home / "dagster")) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return dict(run.tags)


def test_backtests_run_in_workers_forked_from_the_warm_process(server):
    pids = []
    for _ in range(2):
        run_id = launch_backtest(server)
        run = wait_run(server, run_id, timeout=300)
        assert run["status"] == "SUCCESS"
        pid = int(run["tags"][PID_TAG])
        events = _messages(server.home, run_id)
        # the launcher forked it, and that process ran the run (Dagster's own "Started process" event)
        assert ("ENGINE_EVENT", f"Forked run worker (pid: {pid}) from the warm run process.") in [
            (k, m.removeprefix("[WarmRunLauncher] ")) for k, m in events
        ]
        assert any(m.startswith(f"Started process for run (pid: {pid})") for _, m in events)
        assert not any("launching a fresh run worker" in m for _, m in events)
        meta = latest_materialization(server, BACKTEST_KEY)
        assert meta is not None and meta["runId"] == run_id and meta["metadata"]["totalTrades"] >= 0
        pids.append(pid)
    assert pids[0] != pids[1]  # a new worker per run, not one process reused


def test_a_failing_backtest_fails_its_run_with_the_reason(server):
    run_id = launch_backtest(server, {"symbol": "ETHUSDT"})
    run = wait_run(server, run_id, timeout=300)
    assert run["status"] == "FAILURE" and PID_TAG in run["tags"]
    events = _messages(server.home, run_id)
    failure = next(m for k, m in events if k == "STEP_FAILURE")
    assert "the lake has no ETHUSDT 1m candles" in failure
    assert any(k == "PIPELINE_FAILURE" for k, _ in events)


RELOAD = """mutation { reloadRepositoryLocation(repositoryLocationName: "xcoin") { __typename
  ... on WorkspaceLocationEntry { locationOrLoadError { __typename } } ... on PythonError { message } } }"""


def _warm_processes(server: DagsterDev) -> set[int]:
    """The warm process itself (its spare and workers are its children, with the same argv)."""
    import psutil

    warm = {}
    for p in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.cmdline()[1:3] == ["-m", "xcoin_pipelines.launcher"]:
                warm[p.pid] = p.ppid()
        except psutil.Error:  # ended while we looked
            continue
    return {pid for pid, parent in warm.items() if parent not in warm}


def test_a_reloaded_code_location_gets_a_new_warm_process(server):
    assert wait_run(server, launch_backtest(server), timeout=300)["status"] == "SUCCESS"
    before = _warm_processes(server)
    assert len(before) == 1
    out = server.graphql(RELOAD)["reloadRepositoryLocation"]
    assert out["__typename"] == "WorkspaceLocationEntry", out
    # The daemon that launches queued runs sees the reload when it next refreshes its workspace (on
    # its own schedule, as for Dagster's default launcher): a run launched before that still runs on
    # the code location it knows. Within a minute, a run gets a new warm process.
    deadline, after = time.monotonic() + 60, before
    while after == before and time.monotonic() < deadline:
        run = wait_run(server, launch_backtest(server), timeout=300)
        assert run["status"] == "SUCCESS" and PID_TAG in run["tags"]
        after = _warm_processes(server)
    assert len(after) == 1 and after != before  # the old one (old code) ended, a new one serves


def test_terminate_from_the_ui_cancels_the_forked_worker(server):
    run_id = _launch_sweep(server, LONG_SWEEP)
    pid = _wait_step_started(server, run_id)
    start = _proc_start(pid)
    assert start is not None
    out = server.graphql(TERMINATE, {"id": run_id})["terminateRun"]
    assert out["__typename"] == "TerminateRunSuccess", out
    run = wait_run(server, run_id, timeout=120)
    assert run["status"] == "CANCELED"
    deadline = time.monotonic() + 30
    while _proc_start(pid) == start and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _proc_start(pid) != start  # the worker is gone, not left computing
    assert any(k == "PIPELINE_CANCELING" for k, _ in _messages(server.home, run_id))


def test_a_killed_worker_fails_its_run_through_run_monitoring(server):
    run_id = _launch_sweep(server, LONG_SWEEP)
    pid = _wait_step_started(server, run_id)
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would: no event, no goodbye
    run = wait_run(server, run_id, timeout=120)
    assert run["status"] == "FAILURE"
    events = _messages(server.home, run_id)
    assert any(f"run worker (pid: {pid}) exited without ending the run" in m for _, m in events)
