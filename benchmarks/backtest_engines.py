"""The workload every engine of benchmarks/backtest.py runs (SMA crossover 20/50 long-only, SL 2 %,
TP 4 %, no fee, all-in at the close), its candles, the bare numba loop of the same rules, and each
engine's call (each runs in its own worker process)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def run_xcoin_frames(candles):
    """As `run_xcoin`, then reading the result's trade and equity frames (built on first read)."""
    from xcoin_trading.backtest import SimulationConfig, run_backtest

    cfg = SimulationConfig(initial_capital=10_000, risk_per_trade="0.02", commission=str(FEE))
    r = run_backtest(candles, "sma_crossover", {"fast": FAST, "slow": SLOW, "sl_pct": SL, "tp_pct": TP,
                                                "mode": "long_only"}, cfg)  # fmt: skip
    return r.trades.height, float(r.equity.get_column("equity")[-1])


def run_xcoin_fresh(candles):
    """As `run_xcoin` on a new frame object every call (the same buffers): the candle checks run
    every time, as for a backtest of freshly loaded candles."""
    return run_xcoin(candles.clone())


def bare_loop():
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
        _BARE.append(bare_loop())
    o, h, lo, c = vbt_arrays(candles)
    return _BARE[0](o, h, lo, c, FAST, SLOW, SL, TP, FEE, 0.02, 10_000.0)


def vbt_arrays(candles):
    return tuple(candles.get_column(x).to_numpy() for x in ("open", "high", "low", "close"))


def run_vectorbt(candles, engine):
    import vectorbt as vbt

    o, h, lo, c = vbt_arrays(candles)
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

    o, h, lo, c = vbt_arrays(candles)
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
    """The kernel alone, reading signal arrays computed once (the candle walk with its fused
    statistics and the per-candle curves): what a backtest of any strategy's signals runs. (A
    single sma_crossover backtest computes its signals inside the walk instead: `run_xcoin`.)"""
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
    "xcoin+frames": run_xcoin_frames,
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
