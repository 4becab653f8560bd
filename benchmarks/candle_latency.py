"""Candle close → first entry acknowledged, through the daemon path (no hand ticks).

The simulator runs a random walk on the real clock in its own process; N subscribers (default 100)
follow one spot strategy that enters on even minutes and exits on odd ones; a local Dagster instance
(`dagster.example.yaml`: queued coordinator, 1 s dequeue) runs `dagster-daemon` with
`candle_close_sensor` on. For every entry candle: when the run was created and its step started
(negative = before the close), when the exchange created the first entry order (its own clock), and
when the last entry's answer was recorded, and each step's share of the way there (below). Two
modes in one run, the same everything else:

- `prelaunch`: the sensor requests a close up to 20 s ahead and the run waits for it warm (default);
- `at close`: `XCOIN_LIVE_PRELAUNCH_MS=0`, the run is requested after the close (the old path).

Steps (times from the Dagster instance, the execution row and the exchange's own order time): sensor
tick → run requested → run started (dequeue, launch, process start) → op started → op waiting →
close → execution claimed → candles fetched → strategy (sandbox) → balances + plan + intents →
first entry acknowledged. A step's share is the part of it after the close over close → first ack.
`--every-candle` makes every candle an entry (positions stack; max positions raised), so N candles
give N samples instead of N/2.

    XCOIN_TEST_POSTGRES_URL=... .venv/bin/python benchmarks/candle_latency.py [--n 100] [--candles 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fanout import dagster_daemon  # noqa: E402
from benchmarks.live_world import fresh_store, percentile, seed  # noqa: E402

ALTERNATING = """
import polars as pl
DEFAULT_PARAMS = {}
def signals(candles, params):
    even = ((pl.col("open_time") // 60_000) % 2) == 0  # open_time: epoch ms
    return candles.select(
        pl.when(even).then(pl.lit("LONG")).otherwise(pl.lit("EXIT")).alias("action"),
        (pl.col("close") * 0.95).alias("stop_loss"), (pl.col("close") * 1.05).alias("take_profit"),
    )
"""


def _exchange_ms(raw: dict | None) -> float | None:
    value = (raw or {}).get("created_at")
    if value is None:
        return None
    if isinstance(value, int | float) or str(value).isdigit():
        return float(value) / 1000
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


EVERY_CANDLE = """
import polars as pl
DEFAULT_PARAMS = {}
def signals(candles, params):
    return candles.select(pl.lit("LONG").alias("action"),
        (pl.col("close") * 0.95).alias("stop_loss"), (pl.col("close") * 1.05).alias("take_profit"))
"""


def _sensor_ticks(instance) -> dict[str, float]:
    """Run id -> timestamp of the candle_close_sensor tick that requested it."""
    out: dict[str, float] = {}
    for state in instance.all_instigator_state():
        if state.instigator_name != "candle_close_sensor":
            continue
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5000):
            for run_id in tick.run_ids:
                out[run_id] = tick.timestamp
    return out


def _first_log(instance, run_id: str, close: float) -> dict[str, float]:
    """Seconds from the close to the run's start, its step's start and the op's 'waiting' log."""
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event.event_type.name if entry.dagster_event else None
        if event in ("RUN_START", "STEP_START"):
            out.setdefault(event, entry.timestamp - close)
        elif event is None and "waiting for the close" in (entry.user_message or ""):
            out.setdefault("WAITING", entry.timestamp - close)
    return out


STEPS = (
    "sensor tick → run requested",
    "run requested → run started",
    "run started → op started",
    "op started → op waiting",
    "op waiting → close",
    "→ execution claimed",
    "candles fetched",
    "strategy",
    "balances + plan + intents",
    "send → first ack",
)


def steps_of(row: dict) -> list[tuple[float, float]]:
    """(start, end) of each of STEPS, seconds from the close (negative: before it)."""
    tick, created, run, step = row["tick"], row["run_created"], row["run_start"], row["step_start"]
    waiting = row["waiting"] if row["waiting"] is not None else step
    waited = max(0.0, waiting)  # the op waits until the close when it started before it
    claimed = row["claimed"]
    candles = claimed + row["candles_ms"] / 1000
    strategy = candles + row["strategy_ms"] / 1000
    planned = strategy + row["plan_ms"] / 1000
    return [(tick, created), (created, run), (run, step), (step, waiting), (waiting, waited), (waited, claimed),
            (claimed, candles), (candles, strategy), (strategy, planned), (planned, row["first_ack"])]  # fmt: skip


def measure(
    url: str, admin, n: int, candles: int, prelaunch_ms: int, every_candle: bool = False
) -> list[dict]:
    import dagster as dg
    import sqlalchemy as sa

    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order, Strategy, StrategyExecution

    os.environ["XCOIN_LIVE_PRELAUNCH_MS"] = str(prelaunch_ms)
    store = fresh_store(f"latency{prelaunch_ms}")
    strategy_id, _ = seed(store, admin, n)
    with session_scope(store) as session:
        session.get(Strategy, strategy_id).source = EVERY_CANDLE if every_candle else ALTERNATING
        if every_candle:
            from xcoin_trading.store.models import Subscription

            session.execute(sa.update(Subscription).values(max_positions=candles + 5))
    rows = []
    with dagster_daemon(url, store, before_daemon=["sensor", "start", "candle_close_sensor"]):
        instance = dg.DagsterInstance.get()
        try:
            deadline = time.time() + 60 * (candles + 2)
            while time.time() < deadline:
                with session_scope(store) as session:
                    done = session.scalar(
                        sa.select(sa.func.count())
                        .select_from(StrategyExecution)
                        .where(StrategyExecution.status.in_(("COMPLETED", "FAILED", "SKIPPED", "NO_SIGNAL")))
                    )
                if done >= candles:
                    break
                time.sleep(2)
            runs = {
                r.dagster_run.run_id: r
                for r in instance.get_run_records(filters=dg.RunsFilter(job_name="live_execution_job"))
            }
            ticks = _sensor_ticks(instance)
            with session_scope(store) as session:
                executions = session.scalars(
                    sa.select(StrategyExecution).order_by(StrategyExecution.id)
                ).all()
                seen = Counter((e.status, e.signal, (e.error or "")[:100]) for e in executions)
                print(
                    f"  executions ({'prelaunch' if prelaunch_ms else 'at close'}): {dict(seen)}",
                    file=sys.stderr,
                )
                for e in executions[1:]:  # the first candle also paid the daemon's start-up
                    close = e.scheduled_at.timestamp()
                    entries = session.scalars(
                        sa.select(Order).where(Order.execution_id == e.id, Order.leg == "ENTRY")
                    ).all()
                    if e.signal != "LONG" or not entries:
                        continue
                    record = runs.get(e.dagster_run_id or "")
                    logs = _first_log(instance, record.dagster_run.run_id, close) if record else {}
                    step = logs.get("STEP_START")
                    acked = [t for t in (_exchange_ms(o.raw_last_response) for o in entries) if t]
                    timings = (e.details or {}).get("timings", {})
                    rows.append({
                        "status": e.status,
                        "tick": ticks[record.dagster_run.run_id] - close if record and record.dagster_run.run_id in ticks else None,
                        "run_start": logs.get("RUN_START"),
                        "waiting": logs.get("WAITING"),
                        "claimed": e.started_at.timestamp() - close,
                        "candles_ms": timings.get("candles_ms", 0),
                        "strategy_ms": timings.get("strategy_ms", 0),
                        "plan_ms": timings.get("balances_ms", 0) + timings.get("plan_ms", 0),
                        "run_created": record.create_timestamp.timestamp() - close if record else None,
                        "step_start": step,
                        "first_ack": (min(acked) - close) if acked else None,
                        # The execution is finished right after its last answer is recorded (an order's
                        # updated_at is not: it carries the fan-out's candle time, and later reconciles).
                        "last_recorded": e.finished_at.timestamp() - close if e.finished_at else None,
                        "entries": len(entries),
                    })  # fmt: skip
        finally:
            instance.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="subscribers")
    parser.add_argument("--candles", type=int, default=6, help="candles per mode (half of them enter)")
    parser.add_argument("--every-candle", action="store_true", help="every candle enters: a sample each")
    parser.add_argument(
        "--modes", nargs="*", default=["prelaunch", "at-close"], help="prelaunch and/or at-close"
    )
    args = parser.parse_args()

    from xcoin_trading.exchange.simulator import SimulatorAdmin
    from xcoin_trading.exchange.simulator.server import SimulatorProcess

    if not os.environ.get("XCOIN_ENCRYPTION_KEY"):
        import base64

        os.environ["XCOIN_ENCRYPTION_KEY"] = "k1:" + base64.b64encode(os.urandom(32)).decode()
    results = {}
    with SimulatorProcess(["--seed", "9", "--no-rate-limits"]) as sim, SimulatorAdmin(sim.url) as admin:
        modes = {"prelaunch": ("prelaunch 20 s", 20000), "at-close": ("at close", 0)}
        for mode in args.modes:
            label, lead = modes[mode]
            results[label] = measure(sim.url, admin, args.n, args.candles, lead, args.every_candle)
    load = os.getloadavg()[0]
    print(
        f"\nCandle close → first entry acknowledged through the daemon (N={args.n}, load avg {load:.1f}), seconds"
    )
    print(f"{'mode':<14} {'candles':>7} {'run created':>12} {'step start':>11} {'first ack p50/p95':>18} "
          f"{'last recorded p50/p95':>22}")  # fmt: skip
    for label, rows in results.items():
        ok = [r for r in rows if r["first_ack"] is not None]
        if not ok:
            print(f"{label:<14} no entry candle measured: {rows}")
            continue
        first = [r["first_ack"] for r in ok]
        last = [r["last_recorded"] for r in ok if r["last_recorded"] is not None] or [float("nan")]
        created = statistics_mean([r["run_created"] for r in ok if r["run_created"] is not None])
        step = statistics_mean([r["step_start"] for r in ok if r["step_start"] is not None])
        print(f"{label:<14} {len(ok):>7} {created:>12.2f} {step:>11.2f} "
              f"{percentile(first, 0.5):>8.2f} / {percentile(first, 0.95):<7.2f} "
              f"{percentile(last, 0.5):>11.2f} / {percentile(last, 0.95):<7.2f}")  # fmt: skip
    print("Target (issue 18): close → first entry acknowledged p95 ≤ 2 s at N = 100.")
    for label, rows in results.items():
        ok = [
            r
            for r in rows
            if r["first_ack"] is not None and None not in (r["tick"], r["run_start"], r["step_start"])
        ]
        if not ok:
            continue
        print(f"\n{label}: each step, median over {len(ok)} entry candles (seconds from the close; share = the "
              "part after the close / close → first ack)")  # fmt: skip
        print(f"{'step':<30} {'starts at':>9} {'takes':>7} {'p95':>7} {'share':>6}")
        spans = [steps_of(r) for r in ok]
        for i, name in enumerate(STEPS):
            starts = [s[i][0] for s in spans]
            takes = [s[i][1] - s[i][0] for s in spans]
            after = [max(0.0, s[i][1]) - max(0.0, s[i][0]) for s in spans]
            total = sum(r["first_ack"] for r in ok)
            print(f"{name:<30} {percentile(starts, 0.5):>9.2f} {percentile(takes, 0.5):>7.2f} "
                  f"{percentile(takes, 0.95):>7.2f} {100 * sum(after) / total:>5.0f}%")  # fmt: skip


def statistics_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
