"""Backtest engine vs vectorbt (numba and Rust engines) and backtesting.py, measured in the same run.

Workload (every engine runs the same one): SMA crossover 20/50 long-only on 1-minute candles,
stop loss 2 %, take profit 4 %, no fee (with 0.1 % fees this strategy loses
its whole capital within months of 1m candles, and engines then differ only in how they treat
dust-sized orders), all-in sizing, entries at the close, metrics
at the end. Candles: real BTCUSDT 1m from ../shared/data (923,040), extended past that by a seeded
bootstrap of the real candles' returns and ranges. Each measurement runs in its own process, so
"peak RSS" is that engine's alone (interpreter and libraries included). Times are end to end
(signals + simulation + metrics), warm (the best of at least --repeat runs, more while under 1 s
of warm runs); the first, cold call is reported as JIT/compile. Every call is timed as `timeit`
does, after a gc.collect() with the collector paused: otherwise cyclic garbage of the previous
call (pandas objects holding big arrays) is freed inside some calls or not at all, and vectorbt's
1M-candle call swings between ~0.2 and ~0.9 s from run to run.

    .venv/bin/python benchmarks/backtest.py            # 100k, 1M, 5M; backtesting.py up to 1M (a few minutes)
    .venv/bin/python benchmarks/backtest.py --quick    # 100k and 1M, no sweep
    .venv/bin/python benchmarks/backtest.py --full     # backtesting.py at 5M too
    .venv/bin/python benchmarks/backtest.py --research # 1M: xcoin vs the bare loop and vectorbt, sweep, walk-forward
    .venv/bin/python benchmarks/backtest.py --profile  # 1M: each stage's thread CPU time beside the bare loop's
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.backtest_engines import (  # noqa: E402
    ENGINES,
    FAST,
    FEE,
    MAX_RUNS,
    SL,
    SLOW,
    SWEEP_FAST,
    SWEEP_SLOW,
    TP,
    WARM_BUDGET_S,
    bare_loop,
    candles_file,
    vbt_arrays,
)


def peak_rss_mb() -> float:
    """VmHWM: this process image's peak resident memory (ru_maxrss would carry the parent's peak
    from before the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, candles) -> tuple[float, float, object]:
    """One call, timed like timeit: the garbage collector paused (after a full collection).
    Returns (wall s, CPU s of the whole process, i.e. every thread, output)."""
    gc.collect()
    gc.disable()
    try:
        t, c = time.perf_counter(), time.process_time()
        out = fn(candles)
        return time.perf_counter() - t, time.process_time() - c, out
    finally:
        gc.enable()


def worker(engine: str, n: int, repeat: int) -> None:
    import polars as pl

    candles = pl.read_parquet(candles_file(n)).rechunk()  # contiguous, as a loaded frame usually is
    fn = ENGINES[engine]
    cold, cpu, out = timed(fn, candles)
    warm, runs, spent = cold, 1, 0.0
    # At least `repeat` runs, and (as timeit's autorange) more while under WARM_BUDGET_S of warm
    # runs, for every engine alike: a burst of load from elsewhere on the machine then cannot
    # spoil all of a fast engine's few-millisecond samples.
    while repeat > 1 and (runs < repeat or (spent < WARM_BUDGET_S and runs < MAX_RUNS)):
        elapsed, used, out = timed(fn, candles)
        warm, runs, spent = min(warm, elapsed), runs + 1, spent + elapsed
        cpu = used if runs == 2 else min(cpu, used)  # warm runs only (the first one compiles)
    rss_mb = peak_rss_mb()
    print(json.dumps({"engine": engine, "n": n, "cold": cold, "warm": warm, "cpu": cpu, "rss_mb": rss_mb,
                      "out": out}))  # fmt: skip


def measure(engine: str, n: int, repeat: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", engine, str(n), str(repeat)], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode} (killed, out of memory?)"]
        return {"engine": engine, "n": n, "error": lines[-1][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k and 1M only, no sweep")
    ap.add_argument("--full", action="store_true", help="backtesting.py at 5M too (slow)")
    ap.add_argument("--research", action="store_true",
                    help="1M only: xcoin vs the bare loop and vectorbt, the xcoin sweep and walk-forward (no 15 GB "
                         "vectorbt sweep)")  # fmt: skip
    ap.add_argument("--profile", action="store_true",
                    help="CPU time (this thread's, load-independent) of each stage of one backtest and one sweep cell "
                         "at 1M candles")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best warm one counts")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return

    if args.profile:
        profile(candles_file(1_000_000))
        return
    load_at_start = os.getloadavg()
    sizes = [100_000, 1_000_000] if args.quick else [100_000, 1_000_000, 5_000_000]
    if args.research:
        sizes = [1_000_000]
    for n in sizes:
        candles_file(n)
    rows = []
    singles = ("xcoin", "xcoin-fresh-frame", "xcoin+frames", "xcoin-kernel", "bare-loop", "vectorbt") if args.research else (
        "xcoin", "xcoin-kernel", "bare-loop", "vectorbt", "vectorbt-rust", "backtesting.py")  # fmt: skip
    for n in sizes:
        for engine in singles:
            repeat = args.repeat
            if engine == "xcoin-kernel" and n != 1_000_000:
                continue
            if engine == "backtesting.py":
                if n > 1_000_000 and not args.full:
                    continue
                repeat = 1 if n > 100_000 else 2  # tens of seconds per run: no warm repeats at scale
            r = measure(engine, n, repeat)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    sweeps = []
    if args.research:
        for engine in ("xcoin-sweep", "xcoin-walk-forward"):
            r = measure(engine, 1_000_000, args.repeat)
            sweeps.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    elif not args.quick:
        # vectorbt's broadcast sweep peaks near 14 GB and takes minutes: a cold and one warm run each (the
        # warm one, without its JIT compile, is what is compared), Rust only with --full.
        for engine in ("xcoin-sweep", "xcoin-walk-forward", "vectorbt-sweep", "vectorbt-rust-sweep"):
            if engine == "vectorbt-rust-sweep" and not args.full:
                continue
            r = measure(engine, 1_000_000, 2 if engine == "vectorbt-sweep" else args.repeat)
            sweeps.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    report(rows, sweeps, load_at_start)


def profile(path: Path, runs: int = 30) -> None:
    """Each stage's thread CPU time, the best of `runs` interleaved runs: other work on the machine
    inflates wall time, far less the CPU time of a thread."""
    import polars as pl

    from xcoin_trading.backtest import SimulationConfig, run_backtest
    from xcoin_trading.backtest.engine import (
        _EquityCurves,
        kernel_rule,
        kernel_signals,
        normalized,
        run_kernel,
        simulate,
        trades_frame,
    )
    from xcoin_trading.backtest.metrics import compute_metrics
    from xcoin_trading.strategy import compute_signals, load_strategy
    from xcoin_trading.strategy.builtin._common import IndicatorMemo

    raw = pl.read_parquet(path).rechunk()
    candles = normalized(raw)
    strategy = load_strategy("sma_crossover")
    params = strategy.resolve_params(
        {"fast": FAST, "slow": SLOW, "sl_pct": SL, "tp_pct": TP, "mode": "long_only"}
    )
    cfg = SimulationConfig(initial_capital=10_000, risk_per_trade="0.02", commission=str(FEE))
    memo = IndicatorMemo()
    signals = kernel_signals(strategy, candles, params, cfg)
    rule = kernel_rule(strategy, params, cfg)
    trades, refused, stats, _ = run_kernel(candles, signals, cfg)
    open_time = candles.get_column("open_time").to_numpy()
    bare = bare_loop()
    o, h, lo, c = vbt_arrays(candles)
    stages = {
        "bare loop (the floor)": lambda: bare(o, h, lo, c, FAST, SLOW, SL, TP, FEE, 0.02, 10_000.0),
        "candle checks (normalize_candles)": lambda: normalized(raw.clone()),
        "signals: frame + validate_signals": lambda: compute_signals(strategy, candles, params),
        "signals: kernel form": lambda: kernel_signals(strategy, candles, params, cfg),
        "signals: kernel form, sums shared (sweep)": lambda: kernel_signals(
            strategy, candles, params, cfg, memo
        ),
        "kernel on signal arrays, with curves": lambda: run_kernel(candles, signals, cfg),
        "kernel on signal arrays (sweep cell)": lambda: run_kernel(candles, signals, cfg, keep_curves=False),
        "kernel computing the signals (backtest)": lambda: run_kernel(candles, rule, cfg, keep_curves=False),
        "metrics": lambda: compute_metrics(
            trades,
            stats,
            n_candles=candles.height,
            initial_capital=10_000.0,
            candle_ms=60_000,
            refused=refused,
        ),  # fmt: skip
        "trades frame (on read)": lambda: trades_frame(trades, open_time, 60_000),
        "equity frame (on read)": lambda: _EquityCurves(candles, trades, 10_000.0)(),
        "simulate (kernel, metrics)": lambda: simulate(candles, rule, cfg),
        "run_backtest (end to end, as 'xcoin')": lambda: run_backtest(raw, strategy, params, cfg),
    }
    best = dict.fromkeys(stages, float("inf"))
    for fn in stages.values():
        fn()  # compile / warm
    for _ in range(runs):
        for name, fn in stages.items():
            gc.collect()
            gc.disable()
            t = time.thread_time()
            fn()
            best[name] = min(best[name], time.thread_time() - t)
            gc.enable()
    floor = best["bare loop (the floor)"]
    print(f"\nSMA {FAST}/{SLOW} on 1,000,000 candles: thread CPU ms, best of {runs}\n")
    print(f"{'stage':<44} {'cpu ms':>8} {'/ bare':>7}")
    for name, t in best.items():
        print(f"{name:<44} {t * 1000:>8.3f} {t / floor:>7.2f}")
    print(f"\nload avg (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


TARGETS = {"xcoin-sweep": 0.5, "xcoin-walk-forward": 2.0}  # seconds, warm, at 1M candles (issue 21)


def report(rows: list[dict], sweeps: list[dict], load_at_start: tuple[float, ...]) -> None:
    ours = {r["n"]: r for r in rows if r["engine"] == "xcoin" and "warm" in r}
    bare = {r["n"]: r for r in rows if r["engine"] == "bare-loop" and "warm" in r}
    print(
        f"\nSMA 20/50 long-only, SL 2 % / TP 4 %, no fee; {os.cpu_count()} cores; end to end, warm (best of runs)\n"
    )
    print(f"{'candles':>10}  {'engine':<15} {'warm s':>8} {'candles/s':>13} {'xcoin ×':>8} {'/ bare':>7} "
          f"{'cpu s':>8} {'cpu/bare':>8} {'cold s':>8} {'peak RSS MB':>11}  trades")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['n']:>10,}  {r['engine']:<15} failed: {r['error']}")
            continue
        speed = r["n"] / r["warm"]
        ratio = r["warm"] / ours[r["n"]]["warm"] if r["n"] in ours else float("nan")
        to_bare = r["warm"] / bare[r["n"]]["warm"] if r["n"] in bare else float("nan")
        cpu_bare = r["cpu"] / bare[r["n"]]["cpu"] if r["n"] in bare else float("nan")
        print(f"{r['n']:>10,}  {r['engine']:<15} {r['warm']:>8.4f} {speed:>13,.0f} {ratio:>8.1f} {to_bare:>7.2f} "
              f"{r['cpu']:>8.4f} {cpu_bare:>8.2f} {r['cold']:>8.2f} {r['rss_mb']:>11.0f}  {r['out'][0]}")  # fmt: skip
    if sweeps:
        base = next((s for s in sweeps if s["engine"] == "xcoin-sweep" and "warm" in s), None)
        print(f"\n{len(SWEEP_FAST) * len(SWEEP_SLOW)}-combination sweep (fast {SWEEP_FAST[0]}..{SWEEP_FAST[-1]} × slow "
              f"{SWEEP_SLOW[0]}..{SWEEP_SLOW[-1]}) on 1,000,000 candles; walk-forward: 10 rolling windows "
              f"(train 3× test) × the same 100 combinations\n")  # fmt: skip
        print(
            f"{'engine':<20} {'warm s':>8} {'target s':>8} {'xcoin ×':>8} {'cpu s':>8} {'cpu/wall':>8} {'cold s':>8} "
            f"{'peak RSS MB':>11}"
        )
        for s in sweeps:
            if "error" in s:
                print(f"{s['engine']:<20} failed: {s['error']}")
                continue
            ratio = s["warm"] / base["warm"] if base else float("nan")
            target = f"{TARGETS[s['engine']]:.1f}" if s["engine"] in TARGETS else ""
            print(f"{s['engine']:<20} {s['warm']:>8.3f} {target:>8} {ratio:>8.1f} {s['cpu']:>8.3f} "
                  f"{s['cpu'] / s['warm']:>8.2f} {s['cold']:>8.2f} {s['rss_mb']:>11.0f}")  # fmt: skip
    print(
        "\n'xcoin ×' = that engine's time / xcoin's time (above 1: xcoin is faster); '/ bare' = that engine's time / "
        "the bare numba loop's (issue 21: xcoin ≤ 2). 'cpu s' = the best warm run's CPU time of the whole process (all "
        "threads): on a loaded machine it moves far less than wall time; 'cpu/wall' near 2 = both cores busy. Cold = first call in a fresh process (JIT compile or cache "
        "load included). Load on the machine from other work shows in 'load avg' below.\n"
        f"load avg (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in load_at_start)}; at the end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
