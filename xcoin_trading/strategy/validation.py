"""Validation of uploaded strategies: it compiles, it runs on sample candles in the sandbox, it
returns the contract's columns, and it does not look ahead (signals on a truncated history equal the
same rows computed on the full history)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from xcoin_trading.strategy.contract import StrategyError, validate_signals
from xcoin_trading.strategy.sandbox import SandboxLimits, run_sandboxed

SAMPLE_CANDLES = 600
LOOKAHEAD_CUTS = (250, 420)


@dataclass
class ValidationReport:
    status: str  # VALID / INVALID
    errors: list[str] = field(default_factory=list)
    stdout: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "VALID"


def sample_candles(n: int = SAMPLE_CANDLES, seed: int = 7) -> pl.DataFrame:
    """A deterministic 1m random walk with trends and reversals, so crossover-style code fires."""
    rng = np.random.default_rng(seed)
    drift = np.sin(np.linspace(0, 6 * np.pi, n)) * 0.002
    close = 30_000 * np.exp(np.cumsum(drift + rng.normal(0, 0.003, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.002, n)) * close
    return pl.DataFrame(
        {
            "open_time": (np.arange(n, dtype=np.int64) + 28_400_000) * 60_000,
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(1, 10, n),
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
    try:
        full_run = run_sandboxed(code, source, candles, params, limits)
        full = validate_signals(full_run.signals, candles, code)
    except StrategyError as exc:
        return ValidationReport("INVALID", [exc.reason])
    errors: list[str] = []
    for cut in LOOKAHEAD_CUTS:
        head = candles.head(cut)
        try:
            partial = validate_signals(run_sandboxed(code, source, head, params, limits).signals, head, code)
        except StrategyError as exc:
            errors.append(f"fails on a history of {cut} candles: {exc.reason}")
            continue
        rows = _frames_equal(partial, full.head(cut))
        if rows:
            errors.append(
                f"looks ahead: with {cut} candles of history, rows {rows[:5]} differ from the same rows computed "
                f"on {len(candles)} candles (a signal must depend only on candles up to its own)"
            )
    return ValidationReport("INVALID" if errors else "VALID", errors, full_run.stdout)
