"""The tearsheet: buy & hold benchmark, markers, monthly returns, drawdown periods, trade list and
inputs, read back from the HTML the way a browser would see them; figures recomputed here."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from tests.conftest import shared_data_file
from xcoin_trading.backtest import SimulationConfig, run_backtest
from xcoin_trading.backtest import tearsheet as ts
from xcoin_trading.backtest.report import write_report
from xcoin_trading.strategy import read_candles_file


class Page(HTMLParser):
    """Element ids, the SVG marker uses and paths under each id, and table cells by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.children: dict[str, int] = {}  # <use> elements: one per drawn marker
        self.paths: dict[str, int] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[str | None] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("path", "use"):
            count = self.children if tag == "use" else self.paths
            for gid in filter(None, self._open):
                count[gid] = count.get(gid, 0) + 1
        if tag in ("path", "use", "img", "br", "meta"):
            return
        self._open.append(a.get("id"))
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("path", "use", "img", "br", "meta"):
            return
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        if tag == "table":
            self._table = None
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def btc():
    return read_candles_file(shared_data_file("BTCUSDT-1m-2024-01.parquet"))


def _page(tmp_path, result) -> Page:
    paths = write_report(result, tmp_path / "report.html")
    assert paths.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = Page()
    page.feed(paths.html.read_text())
    return page


def test_report_shows_buy_and_hold_markers_months_drawdowns_trades_and_inputs(tmp_path, btc):
    cfg = SimulationConfig(commission="0.001", slippage="0.0002")
    result = run_backtest(btc, "sma_crossover", {"fast": 30, "slow": 120}, cfg)
    result.source = {"symbol": "BTCUSDT"}
    page = _page(tmp_path, result)
    trades = result.trades

    # The chart: the benchmark line, the strategy line, a marker per entry and per exit (under the
    # 2,000-marker cap every trade has its own), each an SVG element under its id.
    assert {"benchmark", "equity", "price", "entries-long", "entries-short", "exits", "drawdown"} <= page.ids
    longs = trades.filter(pl.col("side") == "LONG").height
    assert page.children["entries-long"] == longs and page.children["entries-short"] == trades.height - longs
    assert page.children["exits"] == trades.height
    assert page.paths["benchmark"] == 1 and page.paths["equity"] == 1

    # Buy & hold, recomputed: all-in at the first close with the fee, out at the last with it.
    close = btc.get_column("close").to_numpy()
    qty = 10_000 / (close[0] * 1.001)
    final = qty * close[-1] * 0.999
    table = {row[0]: row[1:] for row in page.tables["vs-benchmark"][1:]}
    assert table["Total return %"][1] == f"{(final / 10_000 - 1) * 100:,.2f}"
    assert table["Final value"][1] == f"{final:,.2f}"
    assert table["Total return %"][0] == f"{result.metrics['totalPnlPct']:,.2f}"
    assert table["Sharpe"][0] == f"{result.metrics['sharpeRatio']:,.2f}"
    assert table["Max drawdown %"][0] == f"{result.metrics['maxDrawdownPct']:,.2f}"

    # Inputs in the header.
    inputs = {row[0]: row[1] for row in page.tables["inputs"]}
    assert inputs["Strategy"] == "sma_crossover" and "fast=30" in inputs["Parameters"]
    assert inputs["Market"].startswith("BTCUSDT") and "0.1 % of notional" in inputs["Fees"]
    assert "2 bps" in inputs["Fills"] and "sl_first" in inputs["Fills"]
    assert inputs["Period (UTC)"] == "2024-01-01 00:00 → 2024-02-01 00:00"

    # One month of data: its return is the whole backtest's.
    months = page.tables["monthly-returns"]
    assert months[1][0] == "2024" and months[1][1] == f"{result.metrics['totalPnlPct']:.1f}"
    assert months[1][2:13] == [""] * 11

    # Trade list: fees, %, human durations.
    rows = page.tables["trades"]
    head, first = rows[0], dict(zip(rows[0], rows[1], strict=True))
    assert {"fees", "P&L %", "duration"} <= set(head)
    t0 = trades.row(0, named=True)
    minutes = t0["exit_index"] - t0["entry_index"]
    assert first["duration"] == ts.human_duration(minutes * 60)
    assert first["fees"].replace(",", "") == f"{t0['entry_fee'] + t0['exit_fee']:.6g}".replace(",", "")

    # The deepest drawdown of the table is the metrics' maximum.
    dd = page.tables["drawdowns"]
    assert len(dd) - 1 == 5
    assert float(dd[1][4]) == pytest.approx(result.metrics["maxDrawdownPct"], abs=0.006)


def test_drawdown_periods_and_months_on_a_hand_made_curve():
    # 1h candles: peak 110 at t1, trough 88 at t3 (-20 %), recovered at t5 (>= 110); then a dip of
    # 5 % (t6) never recovered.
    eq = np.array([100, 110, 99, 88, 105, 111, 105.45, 106.0])
    t = np.arange(8, dtype=np.int64) * 3_600_000
    periods = ts.drawdown_periods(eq, 100.0, t)
    assert [round(p["depth_pct"], 6) for p in periods] == [20.0, 5.0]
    first, second = periods
    assert (first["start_ms"], first["trough_ms"], first["recovery_ms"]) == (t[1], t[3], t[5])
    assert first["duration_s"] == 4 * 3600 and first["recovery_s"] == 2 * 3600
    assert second["recovery_ms"] is None and second["start_ms"] == t[5]


def test_monthly_returns_chain_month_ends():
    times = (
        pl.Series([f"2024-0{m}-1{d}" for m in (1, 2, 3) for d in (0, 5)])
        .str.to_datetime()
        .dt.replace_time_zone("UTC")
    )
    eq = np.array([101.0, 110.0, 120.0, 99.0, 99.0, 108.9])
    months = ts.monthly_returns(times, eq, 100.0)
    got = months.get_column("return_pct").to_list()
    assert got == pytest.approx([10.0, -10.0, 10.0])
    [(year, cells, total)] = ts.monthly_grid(months)
    assert year == 2024 and cells[:3] == pytest.approx([10.0, -10.0, 10.0]) and cells[3:] == [None] * 9
    assert total == pytest.approx((1.1 * 0.9 * 1.1 - 1) * 100)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (30, "30 s"),
        (60, "1 min"),
        (3_600, "1 h"),
        (3_900, "1 h 05 min"),
        (90_000, "1 d 1 h"),
        (172_800, "2 d"),
    ],
)
def test_durations_read_as_a_trader_says_them(seconds, text):
    assert ts.human_duration(seconds) == text


def test_a_million_candles_chart_is_bucketed_and_markers_capped(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    candles = pl.DataFrame(
        {"open_time": 1_704_067_200_000 + np.arange(n, dtype=np.int64) * 60_000, "open": close,
         "high": close * 1.001, "low": close * 0.999, "close": close, "volume": np.ones(n)}
    )  # fmt: skip
    result = run_backtest(
        candles, "sma_crossover", {"fast": 5, "slow": 20, "mode": "long_only"}, SimulationConfig()
    )
    assert result.trades.height > 2_000
    page = _page(tmp_path, result)
    assert page.children["exits"] <= 2 * 2_000  # one per bucket at most
    assert page.children["entries-long"] <= 2_000 and page.children.get("entries-short", 0) == 0
    md = ts.markdown(result)
    assert "Buy & hold" in md and "| Peak | Trough |" in md
    assert not math.isnan(ts.build(result).benchmark["sharpeRatio"])


def test_a_backtest_without_trades_still_reports_its_benchmark(tmp_path):
    close = np.linspace(100.0, 120.0, 300)
    candles = pl.DataFrame(
        {"open_time": 1_704_067_200_000 + np.arange(300, dtype=np.int64) * 3_600_000, "open": close,
         "high": close, "low": close, "close": close, "volume": np.ones(300)}
    )  # fmt: skip
    result = run_backtest(candles, "sma_crossover", {"fast": 5, "slow": 20}, SimulationConfig(commission=0))
    assert result.trades.height == 0
    page = _page(tmp_path, result)
    assert "benchmark" in page.ids and page.children.get("exits", 0) == 0
    table = {row[0]: row[1:] for row in page.tables["vs-benchmark"][1:]}
    assert table["Total return %"] == ["0.00", "20.00"]  # 100 -> 120, no fee
    assert page.tables["drawdowns"] == [["#", "Peak", "Trough", "Recovered", "Depth %", "Length", "Recovery"]]
