"""UI click → backtest success on the demo's data, through a real `dagster dev`: this tree against a
peer (`--peer`, a git revision: by default the tree before issue 17's speed work), in the same run.

The click is the GraphQL mutation the UI's Materialize button sends (`launchPipelineExecution` on the
implicit asset job, `backtests/backtest_result` only, the demo-ready defaults); success is the run's
SUCCESS as the UI polls it. Both trees run their own `dagster.example.yaml` (as `make dev` writes it)
on the same demo candles, side by side; the runs alternate between them (the order flips each
round), so both see the same load on a shared machine.

Phases come from the run's own events: queued (enqueued → launched by the daemon's queue), worker
start (launched → step start: a fresh run worker imports Dagster and the code location and opens the
instance; a worker of the warm launcher, xcoin_pipelines/launcher.py, is already running and only
opens the instance), step (the backtest, its report and chart, the metadata), finish (step end →
RUN_SUCCESS). "chart" is the report + PNG/SVG chart inside the step (the step's `report_ms`
metadata; the peer may not record it). Wall times depend on the machine's load, so CPU-seconds are
measured too: "worker CPU" is the run worker process's user+system time (read from its parent — the
code server, or the warm process — once it has reaped it; a warm spare's imports before the click
are included), "all CPU" that of every process `dagster dev` runs (webserver, daemon, code server,
warm process, worker) from the click to success.

    .venv/bin/python benchmarks/dagster_ui.py [--runs 5] [--peer 31d82cb]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.dagster_ui import (  # noqa: E402
    BACKTEST_KEY,
    DagsterDev,
    dagster_dev,
    demo_candles,
    latest_materialization,
    launch_backtest,
    wait_run,
)

PEER = "31d82cb"  # main before issue 17's speed work
PHASES = ("queued", "worker start", "step", "chart", "finish", "click → success", "worker CPU", "all CPU")


def phases(home: Path, run_id: str) -> dict[str, float]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        t: dict[str, float] = {}
        for e in instance.all_logs(run_id):
            if e.dagster_event is not None:
                t.setdefault(e.dagster_event.event_type_value, e.timestamp)
    return {
        "queued": t["PIPELINE_STARTING"] - t["PIPELINE_ENQUEUED"],
        "worker start": t["STEP_START"] - t["PIPELINE_STARTING"],
        "step": t["STEP_SUCCESS"] - t["STEP_START"],
        "finish": t["PIPELINE_SUCCESS"] - t["STEP_SUCCESS"],
    }


def _tree(server: DagsterDev) -> list[psutil.Process]:
    root = psutil.Process(server.proc.pid)
    return [root, *root.children(recursive=True)]


def _cpu(proc: psutil.Process, *, own: bool = True) -> float:
    """Its own CPU time (`own`) plus that of the children it has reaped."""
    try:
        t = proc.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return (t.user + t.system if own else 0.0) + t.children_user + t.children_system


def tree_cpu(server: DagsterDev) -> float:
    """Every live process of the tree, plus what each has reaped of its dead children."""
    return sum(_cpu(p) for p in _tree(server))


def worker_parents(server: DagsterDev) -> list[psutil.Process]:
    """Whoever starts run workers: the code server (default launcher), the warm run process."""
    tree = _tree(server)
    warm = [p for p in tree if p.cmdline()[1:3] == ["-m", "xcoin_pipelines.launcher"]]
    warm_pids = {p.pid for p in warm}
    grpc = [p for p in tree if p.cmdline()[1:4] == ["-m", "dagster", "api"]]
    return grpc + [p for p in warm if p.ppid() not in warm_pids]  # not its spare or workers


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def one_run(server: DagsterDev) -> dict[str, float]:
    parents = worker_parents(server)
    before_kids = {c.pid for p in parents for c in p.children()}
    worker0, all0 = sum(_cpu(p, own=False) for p in parents), tree_cpu(server)
    t0 = time.perf_counter()
    run_id = launch_backtest(server)  # the click
    run = wait_run(server, run_id, poll=0.1)
    total = time.perf_counter() - t0
    all_cpu = tree_cpu(server) - all0
    if run["status"] != "SUCCESS":
        raise SystemExit(f"run {run_id} ended {run['status']}:\n{server.log.read_text()[-4000:]}")
    deadline = time.monotonic() + 30  # the worker exits after RUN_SUCCESS; its parent reaps it
    if "xcoin/worker_pid" in run["tags"]:  # forked by the warm process (which keeps a spare child)
        while time.monotonic() < deadline and not _gone(int(run["tags"]["xcoin/worker_pid"])):
            time.sleep(0.05)
        time.sleep(0.2)  # reaped by its parent's SIGCHLD handler
    else:
        while time.monotonic() < deadline and {c.pid for p in parents for c in p.children()} - before_kids:
            time.sleep(0.05)
    worker_cpu = sum(_cpu(p, own=False) for p in parents) - worker0
    meta = (latest_materialization(server, BACKTEST_KEY) or {}).get("metadata", {})
    chart = meta["report_ms"] / 1000 if meta.get("report_ms") is not None else float("nan")
    return {**phases(server.home, run_id), "chart": chart, "click → success": total,
            "worker CPU": worker_cpu, "all CPU": all_cpu}  # fmt: skip


def peer_tree(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peer", default=PEER, help=f"git revision to compare with (default {PEER})")
    args = parser.parse_args()
    names = (f"before {args.peer}", "after")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="xcoin-ui-bench-") as tmp, ExitStack() as stack:
        roots = {names[0]: peer_tree(args.peer, Path(tmp) / "peer"), names[1]: ROOT}
        servers = {}
        for name, root in roots.items():
            home = Path(tmp) / ("home-" + name.split()[0])
            demo_candles(home)
            servers[name] = stack.enter_context(dagster_dev(home, root=root))
        for server in servers.values():
            for _ in range(2):  # warm-up: numba compiles into a fresh tree's cache (minutes under load)
                wait_run(server, launch_backtest(server), timeout=900)
        for i in range(args.runs):
            for name in names if i % 2 == 0 else names[::-1]:
                results[name].append(one_run(servers[name]))
                loads.append(os.getloadavg()[0])
    print(f"\nUI click → backtest success, median of {args.runs} runs each (s; CPU in CPU-s), demo candles,"
          f" BTCUSDT 1m defaults; 1-min load average {min(loads):.1f}–{max(loads):.1f}"
          f" (median {statistics.median(loads):.1f}) on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'phase':<18}" + "".join(f"{n:>18}" for n in names) + f"{'ratio':>9}")
    for phase in PHASES:
        med = [statistics.median(r[phase] for r in results[n]) for n in names]
        ratio = med[0] / med[1] if med[1] else float("nan")
        print(f"{phase:<18}" + "".join(f"{v:>18.2f}" for v in med) + f"{ratio:>8.1f}×")
    for name in names:
        runs = sorted(r["click → success"] for r in results[name])
        print(f"{name}: click → success per run {', '.join(f'{v:.2f}' for v in runs)} (target ≤ 5 s)")


if __name__ == "__main__":
    main()
