"""UI click → backtest success on the demo's data, through a real `dagster dev`.

The click is the GraphQL mutation the UI's Materialize button sends (`launchPipelineExecution` on the
implicit asset job, `backtests/backtest_result` only); success is the run's SUCCESS as the UI polls
it. Phases come from the run's own events: queued (enqueued → launched by the daemon's queue), worker
start (launched → step start: the run worker process starts and loads the code location), step (the backtest,
report and metadata), finish (step end → RUN_SUCCESS). Both instance configs run in the same
invocation on the same candles:

- `example`: $DAGSTER_HOME/dagster.yaml written from dagster.example.yaml, as `make dev` now does
  (1 s dequeue, threaded dequeue);
- `no yaml`: what `make dev` ran before (Dagster's defaults: 5 s dequeue interval).

Both use the in-process executor (the code location's default now); the 13.7 s in issue 17 was measured
with the multiprocess executor and no dagster.yaml.

    .venv/bin/python benchmarks/dagster_ui.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.dagster_ui import dagster_dev, demo_candles, launch_backtest, wait_run  # noqa: E402

PHASES = ("queued", "worker start", "step", "finish", "click → success")


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


def measure(home: Path, instance_yaml: bool, runs: int) -> list[dict[str, float]]:
    out = []
    with dagster_dev(home, instance_yaml=instance_yaml) as server:
        for _ in range(2):  # warm-up: numba's on-disk cache, first imports
            wait_run(server, launch_backtest(server))
        for _ in range(runs):
            t0 = time.perf_counter()
            run_id = launch_backtest(server)  # the click
            run = wait_run(server, run_id, poll=0.05)
            total = time.perf_counter() - t0
            if run["status"] != "SUCCESS":
                raise SystemExit(f"run {run_id} ended {run['status']}:\n{server.log.read_text()[-4000:]}")
            out.append({**phases(home, run_id), "click → success": total})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcoin-ui-bench-") as tmp:
        homes = {}
        for name in ("example", "no yaml"):
            homes[name] = Path(tmp) / name.replace(" ", "_")
            demo_candles(homes[name])
        results = {name: measure(homes[name], name == "example", args.runs) for name in homes}
    print(f"\nUI click → backtest success, median of {args.runs} runs (s); demo candles, BTCUSDT 1m defaults")
    print(f"{'phase':<18}" + "".join(f"{n:>12}" for n in results) + f"{'ratio':>10}")
    for phase in PHASES:
        med = {n: statistics.median(r[phase] for r in rs) for n, rs in results.items()}
        ratio = med["no yaml"] / med["example"] if med["example"] else float("nan")
        print(f"{phase:<18}" + "".join(f"{v:>12.2f}" for v in med.values()) + f"{ratio:>9.1f}×")
    best = min(r["click → success"] for r in results["example"])
    print(f"best click → success with the example config: {best:.2f} s (target ≤ 5 s)")


if __name__ == "__main__":
    main()
