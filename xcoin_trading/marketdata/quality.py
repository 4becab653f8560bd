"""Candle quality checks with structured results that name the offending rows.

The four checks (named as the Dagster asset checks are): docs/market-data.md ("The candle lake").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from xcoin_trading.candles import PRICE_COLUMNS, VALUE_COLUMNS
from xcoin_trading.timeframes import day_bounds_ms, from_ms, resolution_ms


def as_ms(value: object) -> int:
    """An epoch-ms value read from the open_time column (`Series.max()` and the like, typed loosely
    by polars); None only comes from an empty or all-null column, which callers rule out first."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"expected an epoch-ms time, got {value!r}")


Severity = Literal["error", "warn"]
MAX_OFFENDING = 20
CHECK_NAMES = ("no_duplicate_times", "regular_grid", "ohlc_sanity", "complete_day")


def iso(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Gap:
    """Missing candles: open times in [start_ms, end_ms) on the grid."""

    start_ms: int
    end_ms: int
    step_ms: int

    @property
    def missing(self) -> int:
        return (self.end_ms - self.start_ms) // self.step_ms

    def describe(self) -> str:
        return f"{iso(self.start_ms)} → {iso(self.end_ms)} ({self.missing} missing)"

    def as_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start_ms), "end": iso(self.end_ms), "missing": self.missing}


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: Severity  # how bad it is when not passed
    summary: str
    count: int = 0  # offending rows, or gaps for the gap/edge findings
    offending: tuple[dict[str, Any], ...] = ()  # the first MAX_OFFENDING rows, each with `row` and `reason`

    @property
    def failed(self) -> bool:
        return not self.passed and self.severity == "error"


@dataclass(frozen=True)
class QualityReport:
    resolution: str
    rows: int
    first_ms: int | None
    last_ms: int | None
    gaps: tuple[Gap, ...]
    checks: tuple[CheckOutcome, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """No check failed with severity error (warnings allowed)."""
        return not any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.failed]

    @property
    def warnings(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.passed and c.severity == "warn"]

    def check(self, name: str) -> CheckOutcome:
        return next(c for c in self.checks if c.name == name)

    def describe(self, max_rows: int = 5) -> str:
        """Human report: one line per failing or warning check, then its first offending rows."""
        lines = []
        for c in self.checks:
            if c.passed:
                continue
            lines.append(f"{c.severity.upper()} {c.name}: {c.summary}")
            lines.extend(f"    {_row_text(r)}" for r in c.offending[:max_rows])
            shown = min(max_rows, len(c.offending))
            if c.count > shown:
                lines.append(f"    ... {c.count - shown} more")
        return "\n".join(lines) if lines else "all checks passed"


def _row_text(row: dict[str, Any]) -> str:
    head = f"row {row['row']}" if "row" in row else ""
    rest = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("row", "reason"))
    reason = f": {row['reason']}" if row.get("reason") else ""
    return f"{head} {rest}{reason}".strip()


def _rows(frame: pl.DataFrame) -> tuple[dict[str, Any], ...]:
    out = []
    for r in frame.head(MAX_OFFENDING).iter_rows(named=True):
        r = dict(r)
        r["open_time"] = iso(r["open_time"]) if r.get("open_time") is not None else None
        out.append(r)
    return tuple(out)


def find_gaps(open_times: pl.Series, step_ms: int) -> tuple[Gap, ...]:
    """Breaks in the grid between consecutive distinct, ascending open times."""
    t = open_times.drop_nulls().unique().sort()
    if len(t) < 2:
        return ()
    frame = (
        pl.DataFrame({"t": t})
        .with_columns(nxt=pl.col("t").shift(-1))
        .filter(pl.col("nxt") - pl.col("t") > step_ms)
    )
    return tuple(Gap(a + step_ms, b, step_ms) for a, b in frame.select("t", "nxt").iter_rows())


def check_candles(
    df: pl.DataFrame,
    resolution: str,
    day: str | None = None,
    *,
    complete_until_ms: int | None = None,
    expect_complete: bool = True,
) -> QualityReport:
    """Run every check on `df` (candle schema, rows in the order received).

    `day` (YYYY-MM-DD) bounds the grid; `complete_until_ms` is the cut-off of a partial day (the open
    time after the last closed candle), default the day's end. `expect_complete=False` (imports of a
    file whose span starts or ends mid-day) turns missing edges into a warning.
    """
    step = resolution_ms(resolution)
    indexed = df.with_row_index("row")
    times = df["open_time"]
    present = times.drop_nulls()
    first = as_ms(present.min()) if len(present) else None
    last = as_ms(present.max()) if len(present) else None
    gaps = find_gaps(times, step)
    return QualityReport(
        resolution=resolution,
        rows=df.height,
        first_ms=first,
        last_ms=last,
        gaps=gaps,
        checks=(
            _duplicates(indexed),
            _grid(indexed, step, day, gaps),
            _sanity(indexed),
            _completeness(df, step, day, first, last, complete_until_ms, expect_complete),
        ),
    )


def _row_errors(name: str, bad: pl.DataFrame, failed: str, passed: str) -> CheckOutcome:
    """An error-severity check that passes when no row is flagged."""
    return CheckOutcome(
        name,
        passed=bad.height == 0,
        severity="error",
        summary=failed if bad.height else passed,
        count=bad.height,
        offending=_rows(bad),
    )


def _duplicates(indexed: pl.DataFrame) -> CheckOutcome:
    dup = indexed.filter(pl.col("open_time").is_duplicated()).with_columns(
        reason=pl.lit("duplicate open_time")
    )
    n_times = dup["open_time"].n_unique() if dup.height else 0
    return _row_errors(
        "no_duplicate_times",
        dup,
        f"{dup.height} rows share {n_times} open times",
        "every open time is unique",
    )


def _flagged(indexed: pl.DataFrame, reasons: list[pl.Expr]) -> pl.DataFrame:
    """The rows at least one reason applies to, with every applying reason joined in `reason`."""
    return indexed.with_columns(reason=pl.concat_str(reasons, separator="; ", ignore_nulls=True)).filter(
        pl.col("reason").is_not_null() & (pl.col("reason") != "")
    )


def _grid(indexed: pl.DataFrame, step: int, day: str | None, gaps: tuple[Gap, ...]) -> CheckOutcome:
    t = pl.col("open_time")
    reasons: list[pl.Expr] = [
        pl.when(t.is_null()).then(pl.lit("open_time is missing")),
        pl.when(t % step != 0).then(pl.lit(f"open_time is not on the {step // 60_000}-minute grid")),
        pl.when(t < t.shift(1)).then(pl.lit("out of order: earlier than the row before")),
    ]
    if day is not None:
        lo, hi = day_bounds_ms(day)
        reasons.append(pl.when((t < lo) | (t >= hi)).then(pl.lit(f"outside the day {day}")))
    bad = _flagged(indexed, reasons)
    if bad.height:
        return CheckOutcome(
            "regular_grid",
            passed=False,
            severity="error",
            summary=f"{bad.height} rows off the time grid or out of order",
            count=bad.height,
            offending=_rows(bad),
        )
    if gaps:
        missing = sum(g.missing for g in gaps)
        listed = "; ".join(g.describe() for g in gaps[:5]) + (" ..." if len(gaps) > 5 else "")
        return CheckOutcome(
            "regular_grid",
            passed=False,
            severity="warn",
            summary=f"{len(gaps)} gaps the exchange has ({missing} candles missing): {listed}",
            count=len(gaps),
            offending=tuple(g.as_dict() for g in gaps[:MAX_OFFENDING]),
        )
    return CheckOutcome("regular_grid", passed=True, severity="error", summary="regular grid, no gaps")


def _sanity(indexed: pl.DataFrame) -> CheckOutcome:
    o, h, lo, c, v = (pl.col(x) for x in VALUE_COLUMNS)
    reasons: list[pl.Expr] = [
        pl.when(pl.col(x).is_null() | pl.col(x).is_nan()).then(pl.lit(f"{x} is NaN or missing"))
        for x in VALUE_COLUMNS
    ]
    reasons += [pl.when(pl.col(x) <= 0).then(pl.lit(f"{x} <= 0")) for x in PRICE_COLUMNS]
    reasons += [
        pl.when(v < 0).then(pl.lit("volume < 0")),
        pl.when(h < pl.max_horizontal(o, c)).then(pl.lit("high < max(open, close)")),
        pl.when(lo > pl.min_horizontal(o, c)).then(pl.lit("low > min(open, close)")),
        pl.when(h < lo).then(pl.lit("high < low")),
    ]
    bad = _flagged(indexed, reasons)
    return _row_errors(
        "ohlc_sanity", bad, f"{bad.height} rows with impossible prices or volume", "prices and volumes sane"
    )


def _completeness(
    df: pl.DataFrame,
    step: int,
    day: str | None,
    first: int | None,
    last: int | None,
    complete_until_ms: int | None,
    expect_complete: bool,
) -> CheckOutcome:
    if df.height == 0 or first is None or last is None:
        return CheckOutcome(
            "complete_day", passed=False, severity="error", summary="no candles: the source returned nothing"
        )
    if day is None:
        return CheckOutcome("complete_day", passed=True, severity="error", summary="no day bounds given")
    lo, hi = day_bounds_ms(day)
    until = hi if complete_until_ms is None else min(hi, complete_until_ms)
    edges = []
    if first > lo:
        edges.append(Gap(lo, min(first, until), step))
    if last + step < until:
        edges.append(Gap(last + step, until, step))
    edges = [g for g in edges if g.missing > 0]
    if not edges:
        return CheckOutcome(
            "complete_day", passed=True, severity="error", summary=f"covers {iso(lo)} → {iso(until)}"
        )
    missing = sum(g.missing for g in edges)
    return CheckOutcome(
        "complete_day",
        passed=False,
        severity="error" if expect_complete else "warn",
        summary=f"day {day} is incomplete, {missing} candles missing at its edges: "
        + "; ".join(g.describe() for g in edges),
        count=len(edges),
        offending=tuple(g.as_dict() for g in edges),
    )
