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
DATA = ROOT.parent / "shared" / "data" / "BTCUSDT-1m-2023-04_2024-12.parquet"
CACHE = Path(os.environ.get("XCOIN_BENCH_CACHE", "/tmp/xcoin-bench"))
FAST, SLOW, SL, TP, FEE = 20, 50, 0.02, 0.04, 0.0
SWEEP_FAST = list(range(5, 55, 5))
SWEEP_SLOW = list(range(60, 260, 20))
WARM_BUDGET_S, MAX_RUNS = 1.0, 50


def candles_file(n: int) -> Path:
    """The first n real candles, extended by a seeded bootstrap when n exceeds the real file."""
    import numpy as np
    import polars as pl

    path = CACHE / f"btc_1m_{n}.parquet"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    real = pl.read_parquet(DATA)
    real = real.with_columns(pl.col("open_time").dt.epoch("ms"))
    if n <= real.height:
        real.head(n).write_parquet(path)
        return path
    rng = np.random.default_rng(20240101)
    o, h, lo, c = (real.get_column(x).to_numpy() for x in ("open", "high", "low", "close"))
    prev = np.r_[c[0], c[:-1]]
    extra = n - real.height
    pick = rng.integers(1, real.height, extra)
    ret = c[pick] / prev[pick]
    close = c[-1] * np.cumprod(ret)
    open_ = np.r_[c[-1], close[:-1]]
    high = np.maximum(open_, close) * (h[pick] / np.maximum(o[pick], c[pick]))
    low = np.minimum(open_, close) * (lo[pick] / np.minimum(o[pick], c[pick]))
    t0 = int(real.get_column("open_time")[-1]) + 60_000
    ext = pl.DataFrame(
        {
            "open_time": t0 + np.arange(extra, dtype=np.int64) * 60_000,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": real.get_column("volume").to_numpy()[pick],
        }
    )
    pl.concat([real, ext]).write_parquet(path)
    return path


# ---- engines (each runs in a worker process) -------------------------------------------------


def run_xcoin(candles):
    """Repeated backtests of one loaded frame: its candles are checked on the first call only."""
    from xcoin_trading.backtest import SimulationConfig, run_backtest

    cfg = SimulationConfig(initial_capital=10_000, risk_per_trade="0.02", commission=str(FEE))
    r = run_backtest(candles, "sma_crossover", {"fast": FAST, "slow": SLOW, "sl_pct": SL, "tp_pct": TP,
                                                "mode": "long_only"}, cfg)  # fmt: skip
    return r.metrics["totalTrades"], r.metrics["finalCapital"]


def run_xcoin_fresh(candles):
    """As `run_xcoin` on a new frame object every call (the same buffers): the candle checks run
    every time, as for a backtest of freshly loaded candles."""
    return run_xcoin(candles.clone())


def _bare_loop():
    """The SMA-SLTP rules of this workload as one bare numba loop: running-sum SMAs, crossovers,
    stops from the next candle (gap at the open, stop first), entries all-in at the close, fees,
    compounding; no checks, no curves, no metrics, no frames. The floor an engine can approach."""
    from numba import njit

    @njit(nogil=True)
    def loop(o, h, lo, c, fast, slow, sl_pct, tp_pct, fee, risk, equity):
        n = c.shape[0]
        sf = ss = 0.0
        was_above = was_below = in_pos = False
        qty = entry = sl = tp = 0.0
        entry_i = trades = 0
        for i in range(n):
            sf += c[i]
            ss += c[i]
            if i >= fast:
                sf -= c[i - fast]
            if i >= slow:
                ss -= c[i - slow]
            above, below = sf / fast > ss / slow, sf / fast < ss / slow
            up = i >= slow and above and not was_above
            down = i >= slow and below and not was_below
            was_above, was_below = above, below
            price = -1.0
            if in_pos and entry_i < i:
                if o[i] <= sl or o[i] >= tp:
                    price = o[i]
                elif lo[i] <= sl:
                    price = sl
                elif h[i] >= tp:
                    price = tp
            if in_pos and price < 0 and (i == n - 1 or down):
                price = c[i]
            if price >= 0:
                equity += qty * (price - entry) - fee * qty * entry - fee * qty * price
                in_pos = False
                trades += 1
            if up and not in_pos and i < n - 1:
                entry = c[i]
                sl, tp = entry * (1 - sl_pct), entry * (1 + tp_pct)
                qty = min(equity * risk / (entry - sl), equity / (entry * (1 + fee)))
                entry_i, in_pos = i, True
        return trades, equity

    return loop


_BARE = []


def run_bare(candles):
    if not _BARE:
        _BARE.append(_bare_loop())
    o, h, lo, c = _vbt_arrays(candles)
    return _BARE[0](o, h, lo, c, FAST, SLOW, SL, TP, FEE, 0.02, 10_000.0)


def _vbt_arrays(candles):
    return tuple(candles.get_column(x).to_numpy() for x in ("open", "high", "low", "close"))


def run_vectorbt(candles, engine):
    import vectorbt as vbt

    o, h, lo, c = _vbt_arrays(candles)
    fast, slow = vbt.MA.run(c, FAST), vbt.MA.run(c, SLOW)
    entries, exits = fast.ma_crossed_above(slow), fast.ma_crossed_below(slow)
    pf = vbt.Portfolio.from_signals(
        c,
        entries,
        exits,
        open=o,
        high=h,
        low=lo,
        sl_stop=SL,
        tp_stop=TP,
        fees=FEE,
        size=1.0,
        size_type="percent",
        init_cash=10_000.0,
        freq="1min",
        engine=engine,
    )
    pf.sharpe_ratio(), pf.max_drawdown(), pf.total_return()
    return int(pf.trades.count()), float(pf.final_value())


def run_backtesting_py(candles):
    import pandas as pd
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest, crossover

    df = candles.to_pandas()
    df.index = pd.to_datetime(df.pop("open_time"), unit="ms", utc=True)
    df.columns = ["Open", "High", "Low", "Close", "Volume"]

    def sma(values, n):
        return pd.Series(values).rolling(n).mean().to_numpy()

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        def next(self):
            price = self.data.Close[-1]
            if crossover(self.fast, self.slow):
                if not self.position:
                    self.buy(size=0.9999, sl=price * (1 - SL), tp=price * (1 + TP))
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    bt = FractionalBacktest(
        df, SmaCross, cash=10_000, commission=FEE, trade_on_close=True, finalize_trades=True
    )
    stats = bt.run()
    return int(stats["# Trades"]), float(stats["Equity Final [$]"])


def run_xcoin_sweep(candles):
    from xcoin_trading.backtest import SimulationConfig
    from xcoin_trading.backtest.sweep import run_sweep
    from xcoin_trading.strategy import load_strategy

    cfg = SimulationConfig(initial_capital=10_000, risk_per_trade="0.02", commission=str(FEE))
    ranking = run_sweep(candles, load_strategy("sma_crossover"), {"fast": SWEEP_FAST, "slow": SWEEP_SLOW}, cfg,
                        base_params={"sl_pct": SL, "tp_pct": TP, "mode": "long_only"})  # fmt: skip
    return ranking.height, float(ranking.get_column("sharpeRatio")[0])


def run_vectorbt_sweep(candles, engine):
    import numpy as np
    import vectorbt as vbt

    o, h, lo, c = _vbt_arrays(candles)
    fasts = np.repeat(SWEEP_FAST, len(SWEEP_SLOW))
    slows = np.tile(SWEEP_SLOW, len(SWEEP_FAST))
    fast = vbt.MA.run(c, window=list(fasts)).ma.to_numpy()
    slow = vbt.MA.run(c, window=list(slows)).ma.to_numpy()
    prev_f, prev_s = np.roll(fast, 1, axis=0), np.roll(slow, 1, axis=0)
    entries = (fast > slow) & (prev_f <= prev_s)
    exits = (fast < slow) & (prev_f >= prev_s)
    entries[0] = exits[0] = False
    col = (c[:, None], o[:, None], h[:, None], lo[:, None])  # (n, 1): broadcast against the 100 columns
    pf = vbt.Portfolio.from_signals(col[0], entries, exits, open=col[1], high=col[2], low=col[3], sl_stop=SL,
                                    tp_stop=TP, fees=FEE, size=1.0, size_type="percent", init_cash=10_000.0,
                                    freq="1min", engine=engine)  # fmt: skip
    sharpe = pf.sharpe_ratio()
    return int(np.asarray(sharpe).shape[0]), float(np.nanmax(np.asarray(sharpe)))


_PREPARED = {}


def run_xcoin_walk(candles):
    """The kernel alone (the candle walk with its fused statistics and the per-candle curves) on
    signals computed once: the part of a backtest the bare loop is the floor of."""
    from xcoin_trading.backtest import SimulationConfig
    from xcoin_trading.backtest.engine import run_kernel
    from xcoin_trading.strategy import compute_signals, load_strategy, normalize_candles

    if not _PREPARED:
        strategy = load_strategy("sma_crossover")
        params = strategy.resolve_params(
            {"fast": FAST, "slow": SLOW, "sl_pct": SL, "tp_pct": TP, "mode": "long_only"}
        )
        frame = normalize_candles(candles)
        cfg = SimulationConfig(initial_capital=10_000, risk_per_trade="0.02", commission=str(FEE))
        _PREPARED.update(frame=frame, signals=compute_signals(strategy, frame, params), cfg=cfg)
    trades, _, _, _ = run_kernel(_PREPARED["frame"], _PREPARED["signals"], _PREPARED["cfg"])
    return trades.shape[1], None


def run_xcoin_walk_forward(candles):
    from xcoin_trading.backtest import SimulationConfig
    from xcoin_trading.backtest.walkforward import run_walk_forward
    from xcoin_trading.strategy import load_strategy

    cfg = SimulationConfig(initial_capital=10_000, risk_per_trade="0.02", commission=str(FEE))
    wf = run_walk_forward(candles, load_strategy("sma_crossover"), {"fast": SWEEP_FAST, "slow": SWEEP_SLOW}, cfg,
                          base_params={"sl_pct": SL, "tp_pct": TP, "mode": "long_only"}, windows=10)  # fmt: skip
    return wf.windows.height, float(wf.oos.metrics["finalCapital"])


ENGINES = {
    "xcoin": run_xcoin,
    "xcoin-fresh-frame": run_xcoin_fresh,
    "bare-loop": run_bare,
    "xcoin-kernel": run_xcoin_walk,
    "xcoin-walk-forward": run_xcoin_walk_forward,
    "vectorbt": lambda c: run_vectorbt(c, "numba"),
    "vectorbt-rust": lambda c: run_vectorbt(c, "rust"),
    "backtesting.py": run_backtesting_py,
    "xcoin-sweep": run_xcoin_sweep,
    "vectorbt-sweep": lambda c: run_vectorbt_sweep(c, "numba"),
    "vectorbt-rust-sweep": lambda c: run_vectorbt_sweep(c, "rust"),
}


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
    singles = ("xcoin", "xcoin-fresh-frame", "xcoin-kernel", "bare-loop", "vectorbt") if args.research else (
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

    from xcoin_trading.backtest import SimulationConfig
    from xcoin_trading.backtest.engine import kernel_signals, normalized, run_kernel, simulate, trades_frame
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
    trades, refused, stats, _ = run_kernel(candles, signals, cfg)
    open_time = candles.get_column("open_time").to_numpy()
    bare = _bare_loop()
    o, h, lo, c = _vbt_arrays(candles)
    stages = {
        "bare loop (the floor)": lambda: bare(o, h, lo, c, FAST, SLOW, SL, TP, FEE, 0.02, 10_000.0),
        "candle checks (normalize_candles)": lambda: normalized(raw.clone()),
        "signals: frame + validate_signals": lambda: compute_signals(strategy, candles, params),
        "signals: kernel form (backtest)": lambda: kernel_signals(strategy, candles, params, cfg),
        "signals: kernel form, sums shared (sweep)": lambda: kernel_signals(
            strategy, candles, params, cfg, memo
        ),
        "kernel with curves (backtest)": lambda: run_kernel(candles, signals, cfg),
        "kernel without curves (sweep cell)": lambda: run_kernel(candles, signals, cfg, keep_curves=False),
        "metrics": lambda: compute_metrics(
            trades,
            stats,
            n_candles=candles.height,
            initial_capital=10_000.0,
            candle_ms=60_000,
            refused=refused,
        ),  # fmt: skip
        "trades frame": lambda: trades_frame(trades, open_time, 60_000),
        "simulate (kernel, metrics, frames)": lambda: simulate(candles, signals, cfg),
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
