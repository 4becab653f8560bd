"""Validation of uploaded strategies: it compiles, it runs on sample candles in the sandbox, it
returns the contract's columns, and it does not look ahead (signals on a truncated history equal the
same rows computed on the full history).

The sample candles are drawn fresh for every validation (seed, length, start time, price level,
volatility and the look-ahead cuts): code that recognises the sample and behaves only there has
nothing fixed to recognise."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from xcoin_trading.strategy.contract import StrategyError, validate_signals
from xcoin_trading.strategy.sandbox import SandboxLimits, run_sandboxed

SAMPLE_CANDLES = (500, 800)  # the length is drawn from this range
# Truncated histories compared with the full one. A look-ahead shows only on a cut's last rows and
# may agree there by chance (a coin flip for `close.shift(-1) > close`): 6 cuts missed it 1 in 64
# (seen as a flaky test); 12 miss it 1 in 4,096, for ~2 more sandbox rounds per upload.
LOOKAHEAD_CUTS = 12
VALIDATION_POOL = 3


@dataclass
class ValidationReport:
    status: str  # VALID / INVALID
    errors: list[str] = field(default_factory=list)
    stdout: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "VALID"


def sample_candles(n: int | None = None, seed: int | None = None) -> pl.DataFrame:
    """A 1m random walk with trends and reversals, so crossover-style code fires. Without a seed,
    everything about it is fresh: length (when `n` is None), start minute (2019-2026), price
    level (1,000-100,000, log-uniform: absolute offsets tuned for BTC still fit), volatility and the trend's period and phase."""
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(*SAMPLE_CANDLES))
    start_minute = int(rng.integers(25_000_000, 29_500_000))
    level = float(np.exp(rng.uniform(np.log(1_000), np.log(100_000))))
    vol = float(rng.uniform(0.001, 0.006))
    cycles, phase = rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
    drift = np.sin(np.linspace(phase, phase + cycles * np.pi, n)) * vol * 0.7
    close = level * np.exp(np.cumsum(drift + rng.normal(0, vol, n)))
    open_ = np.concatenate([[close[0] * (1 + rng.normal(0, vol))], close[:-1]])
    spread = np.abs(rng.normal(0, vol * 0.7, n)) * close
    return pl.DataFrame(
        {
            "open_time": (np.arange(n, dtype=np.int64) + start_minute) * 60_000,
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.lognormal(0, 1, n) * 500_000 / level,
        }
    )


def _frames_equal(a: pl.DataFrame, b: pl.DataFrame) -> list[int]:
    """Row indexes where the two signal frames differ (nulls equal nulls, floats to 1e-9 relative)."""
    diff = pl.DataFrame(
        {
            "action": a["action"].cast(pl.String).ne_missing(b["action"].cast(pl.String)),
            **{
                c: ~(
                    (a[c].is_null() & b[c].is_null())
                    | ((a[c] - b[c]).abs() <= 1e-9 * a[c].abs().fill_null(0).clip(lower_bound=1.0))
                ).fill_null(False)
                for c in ("stop_loss", "take_profit")
            },
        }
    )
    return (
        diff.with_row_index()
        .filter(pl.any_horizontal("action", "stop_loss", "take_profit"))["index"]
        .to_list()
    )


def validate_strategy(
    code: str, source: str, params: dict[str, Any], limits: SandboxLimits | None = None
) -> ValidationReport:
    try:
        compile(source, f"<strategy {code}>", "exec")
    except SyntaxError as exc:
        return ValidationReport("INVALID", [f"does not compile: {exc.msg} at line {exc.lineno}"])
    candles = sample_candles()
    rng = np.random.default_rng()
    cuts = sorted(
        int(x) for x in rng.choice(np.arange(100, candles.height - 20), LOOKAHEAD_CUTS, replace=False)
    )

    def run(frame: pl.DataFrame) -> tuple[pl.DataFrame | None, str, str]:
        try:
            result = run_sandboxed(code, source, frame, params, limits)
            return validate_signals(result.signals, frame, code), "", result.stdout
        except StrategyError as exc:
            return None, exc.reason, ""

    # The runs are independent sandboxes: concurrently, so an upload waits for about two of them.
    with ThreadPoolExecutor(VALIDATION_POOL) as pool:
        full_future = pool.submit(run, candles)
        partial_futures = [pool.submit(run, candles.head(cut)) for cut in cuts]
        full, full_error, stdout = full_future.result()
        partials = [f.result() for f in partial_futures]
    if full is None:
        return ValidationReport("INVALID", [full_error])
    errors: list[str] = []
    for cut, (partial, error, _) in zip(cuts, partials, strict=True):
        if partial is None:
            errors.append(f"fails on a history of {cut} candles: {error}")
            continue
        rows = _frames_equal(partial, full.head(cut))
        if rows:
            errors.append(
                f"looks ahead: with {cut} candles of history, rows {rows[:5]} differ from the same rows computed "
                f"on {len(candles)} candles (a signal must depend only on candles up to its own)"
            )
    return ValidationReport("INVALID" if errors else "VALID", errors, stdout)
