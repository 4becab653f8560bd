"""Fill rules of the engine on hand-built candles, each number worked out in the comment."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import polars as pl
import pytest

from xcoin_trading.backtest import SimulationConfig, simulate
from xcoin_trading.backtest.engine import run_backtest
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import SPOT_MARKETS
from xcoin_trading.strategy import validate_signals

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


def candles(rows: list[tuple[float, float, float, float]], step_ms: int = 60_000) -> pl.DataFrame:
    o, h, lo, c = zip(*rows, strict=True)
    return pl.DataFrame(
        {
            "open_time": [T0 + i * step_ms for i in range(len(rows))],
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": [1.0] * len(rows),
        }
    )


def signals(frame: pl.DataFrame, marks: dict[int, tuple[str, float | None, float | None]]) -> pl.DataFrame:
    rows = [marks.get(i, ("HOLD", None, None)) for i in range(frame.height)]
    raw = pl.DataFrame(
        rows, schema={"action": pl.String, "stop_loss": pl.Float64, "take_profit": pl.Float64}, orient="row"
    )
    return validate_signals(raw, frame, "test")


# No fees, all-in sizing (risk 100 % with a far stop hits the capital cap), so qty = capital / entry.
PLAIN = SimulationConfig(initial_capital=1000, risk_per_trade=1, commission=0)


def run(rows, marks, config=PLAIN, **kw):
    frame = candles(rows)
    return simulate(frame, signals(frame, marks), config, **kw)


def test_long_take_profit_fills_at_the_level_from_the_next_candle():
    # Enter 100 (qty 10). Candle 1 reaches 110 = TP -> +10 × 10 = +100.
    r = run([(100, 100, 100, 100), (100, 111, 99, 105), (105, 105, 105, 105)], {0: ("LONG", 90, 110)})
    t = r.trades.row(0, named=True)
    assert (t["entry_index"], t["exit_index"], t["exit_price"], t["exit_reason"]) == (0, 1, 110, "TP")
    assert t["quantity"] == 10 and t["pnl"] == 100
    assert r.metrics["finalCapital"] == 1100


def test_stops_are_not_checked_on_the_entry_candle():
    # The entry candle itself dips to 80 (below SL 90): ignored, the position is entered at its close.
    r = run([(100, 100, 80, 100), (100, 101, 99, 100), (100, 100, 100, 100)], {0: ("LONG", 90, 110)})
    assert r.trades.item(0, "exit_reason") == "END"


def test_gap_through_stop_fills_at_the_open_or_at_the_level():
    rows = [(100, 100, 100, 100), (85, 86, 80, 84), (84, 84, 84, 84)]
    marks = {0: ("LONG", 90, 110)}
    # Default: candle 1 opens at 85, below SL 90 -> filled at 85: (85 - 100) × 10 = -150.
    gap = run(rows, marks)
    assert gap.trades.item(0, "exit_price") == 85 and gap.trades.item(0, "pnl") == -150
    # "level" (SMA-SLTP spec): at 90 -> -100.
    level = run(
        rows, marks, SimulationConfig(initial_capital=1000, risk_per_trade=1, commission=0, gap_fill="level")
    )
    assert level.trades.item(0, "exit_price") == 90 and level.trades.item(0, "pnl") == -100


def test_short_gap_through_take_profit_fills_at_the_better_open():
    # Short at 100, TP 95; candle 1 opens at 93 -> filled at 93: (100 - 93) × 10 = +70.
    r = run([(100, 100, 100, 100), (93, 94, 92, 93), (93, 93, 93, 93)], {0: ("SHORT", 105, 95)})
    t = r.trades.row(0, named=True)
    assert (t["side"], t["exit_price"], t["exit_reason"], t["pnl"]) == ("SHORT", 93, "TP", 70)


def test_candle_touching_both_levels_is_decided_by_the_rule_and_flagged():
    rows = [(100, 100, 100, 100), (100, 111, 89, 100), (100, 100, 100, 100)]
    marks = {0: ("LONG", 90, 110)}
    sl_first = run(rows, marks)
    assert sl_first.trades.item(0, "exit_reason") == "SL" and sl_first.trades.item(0, "exit_price") == 90
    assert sl_first.trades.item(0, "ambiguous") and sl_first.metrics["ambiguousCandles"] == 1
    tp_first = run(
        rows,
        marks,
        SimulationConfig(initial_capital=1000, risk_per_trade=1, commission=0, intrabar="tp_first"),
    )
    assert tp_first.trades.item(0, "exit_reason") == "TP" and tp_first.trades.item(0, "exit_price") == 110


def test_one_minute_candles_decide_an_ambiguous_five_minute_candle():
    five = candles([(100, 100, 100, 100), (100, 111, 89, 100), (100, 100, 100, 100)], step_ms=300_000)
    sig = signals(five, {0: ("LONG", 90, 110)})
    # Inside candle 1 (minutes 5..9): up to 111 in minute 6 (TP), down to 89 only in minute 8.
    m1 = (
        [(100, 100, 100, 100)] * 5
        + [
            (100, 101, 99, 100),
            (100, 111, 100, 108),
            (108, 108, 95, 96),
            (96, 96, 89, 92),
            (92, 100, 92, 100),
        ]
        + [(100, 100, 100, 100)] * 5
    )
    one = candles(m1)
    cfg = SimulationConfig(initial_capital=1000, risk_per_trade=1, commission=0, intrabar="1m")
    r = simulate(five, sig, cfg, intrabar_candles=one)
    t = r.trades.row(0, named=True)
    assert (t["exit_reason"], t["exit_price"], t["ambiguous"], t["intrabar_resolved"]) == (
        "TP",
        110,
        False,
        True,
    )
    assert r.metrics["intrabarResolved"] == 1 and r.metrics["ambiguousCandles"] == 0
    # A 1m candle that touches both again leaves it to the stop-loss-first rule (and flags it).
    m1[6] = (100, 111, 89, 100)
    r = simulate(five, sig, cfg, intrabar_candles=candles(m1))
    assert r.trades.item(0, "exit_reason") == "SL" and r.trades.item(0, "ambiguous")


def test_intrabar_rule_needs_one_minute_candles_of_a_longer_resolution():
    five = candles([(100, 100, 100, 100)] * 3, step_ms=300_000)
    cfg = SimulationConfig(intrabar="1m")
    with pytest.raises(ValidationError, match="needs the 1-minute candles"):
        simulate(five, signals(five, {}), cfg)
    one = candles([(100, 100, 100, 100)] * 3)
    with pytest.raises(ValidationError, match="these are 1m already"):
        simulate(one, signals(one, {}), cfg, intrabar_candles=one)


def test_opposite_signal_reverses_at_the_close_and_exit_closes():
    rows = [
        (100, 100, 100, 100),
        (100, 102, 99, 102),
        (102, 103, 101, 101),
        (101, 101, 101, 101),
        (101, 101, 101, 101),
    ]
    # Long at 100 (qty 10); short signal at candle 1 closes at 102 (+20) and shorts at 102
    # (qty 1020/102 = 10); EXIT at candle 2 closes at 101 (+10).
    r = run(rows, {0: ("LONG", None, None), 1: ("SHORT", None, None), 2: ("EXIT", None, None)})
    got = r.trades.select("side", "entry_index", "exit_index", "exit_price", "pnl", "exit_reason").rows()
    assert got == [("LONG", 0, 1, 102.0, 20.0, "SIGNAL"), ("SHORT", 1, 2, 101.0, 10.0, "SIGNAL")]
    assert r.metrics["finalCapital"] == 1030


def test_same_side_signal_while_in_a_position_is_ignored():
    rows = [(100, 100, 100, 100)] * 2 + [(100, 100, 100, 120)] * 3
    r = run(rows, {0: ("LONG", 50, 200), 2: ("LONG", 60, 130)})
    assert r.trades.height == 1
    assert r.trades.item(0, "stop_loss") == 50 and r.trades.item(0, "exit_reason") == "END"


def test_stop_out_and_new_entry_on_the_same_candle():
    # Long at 100, SL 95 hit on candle 1 (-50), whose close carries a SHORT: entered at 94.
    rows = [(100, 100, 100, 100), (99, 99, 93, 94), (94, 94, 90, 90)]
    r = run(rows, {0: ("LONG", 95, 110), 1: ("SHORT", 100, 80)})
    got = r.trades.select("side", "entry_index", "exit_index", "exit_reason").rows()
    assert got == [("LONG", 0, 1, "SL"), ("SHORT", 1, 2, "END")]


def test_last_candle_signal_is_ignored_and_open_position_closes_at_the_last_close():
    rows = [(100, 100, 100, 100), (100, 100, 100, 104), (104, 104, 104, 104)]
    r = run(rows, {0: ("LONG", None, None), 2: ("SHORT", None, None)})
    assert r.trades.select("exit_index", "exit_price", "exit_reason").rows() == [(2, 104.0, "END")]


def test_commission_is_charged_on_each_sides_notional():
    # qty = 1000 × 1 / 100 capped at 1000 / (100 × 1.001) = 9.99000999…; fees 0.1 % of 100×q and 110×q.
    cfg = SimulationConfig(initial_capital=1000, risk_per_trade=1, commission="0.001")
    r = run([(100, 100, 100, 100), (100, 111, 99, 105), (105, 105, 105, 105)], {0: ("LONG", 90, 110)}, cfg)
    q = 1000 / (100 * 1.001)
    t = r.trades.row(0, named=True)
    assert t["quantity"] == pytest.approx(q, rel=1e-12)
    assert t["entry_fee"] == pytest.approx(0.1 * q, rel=1e-12) and t["exit_fee"] == pytest.approx(
        0.11 * q, rel=1e-12
    )
    assert t["pnl"] == pytest.approx(10 * q - 0.21 * q, rel=1e-12)
    assert r.metrics["totalCommission"] == pytest.approx(0.21 * q, rel=1e-12)
    assert r.metrics["totalPnl"] - r.metrics["totalCommission"] == pytest.approx(
        r.metrics["netPnl"], rel=1e-12
    )


def test_leverage_scales_the_risk_sized_quantity():
    # Risk 2 % of 1000 = 20 over a stop 5 away = 4 units; 3× leverage -> 12 (cap 1000/(100/3) = 30).
    base = {0: ("LONG", 95, 120)}
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (100, 100, 100, 100)]
    one = run(rows, base, SimulationConfig(initial_capital=1000, risk_per_trade="0.02", commission=0))
    three = run(
        rows, base, SimulationConfig(initial_capital=1000, risk_per_trade="0.02", commission=0, leverage=3)
    )
    assert one.trades.item(0, "quantity") == pytest.approx(4)
    assert three.trades.item(0, "quantity") == pytest.approx(12)


def test_market_rounding_and_minimums_apply_to_backtest_entries():
    btc = SPOT_MARKETS["BTCUSDT"]
    rows = [(42_000.0, 42_000.0, 42_000.0, 42_000.0)] * 3
    # 2 % of 1000 = 20 over 420 = 0.0476190… BTC; ×2 leverage 0.0952380…, but the cap
    # 1000 / (42000 × (1/2 + 0.001)) = 0.047523… BTC binds -> 0.04752 (step 0.00001).
    cfg = SimulationConfig(initial_capital=1000, risk_per_trade="0.02", leverage=2, market=btc)
    assert run(rows, {0: ("LONG", 41_580, 43_000)}, cfg).trades.item(0, "quantity") == 0.04752
    # 1 % risk, stop 1260 away, 1×: 10 / 1260 = 0.0079365… -> 0.00793, under the cap.
    cfg = SimulationConfig(initial_capital=1000, risk_per_trade="0.01", market=btc)
    assert run(rows, {0: ("LONG", 40_740, 43_000)}, cfg).trades.item(0, "quantity") == 0.00793
    # 0.01 % of 100 USDT is far below the 5 USDT minimum order: refused, counted, no trade.
    tiny = run(
        rows,
        {0: ("LONG", 41_580, 43_000)},
        SimulationConfig(initial_capital=100, risk_per_trade="0.0001", market=btc),
    )
    assert tiny.trades.height == 0 and tiny.metrics["refusedEntries"] == 1


def test_equity_is_marked_to_market_each_candle_with_drawdown():
    rows = [(100, 100, 100, 100), (100, 100, 90, 90), (90, 120, 90, 120), (120, 120, 120, 120)]
    r = run(rows, {0: ("LONG", None, None)})
    # qty 10: equity 1000, 900, 1200, 1200 (END); drawdown from the 1000 peak: 0, 100 (10 %), 0, 0.
    assert r.equity.get_column("equity").to_list() == [1000, 900, 1200, 1200]
    assert r.equity.get_column("drawdown").to_list() == [0, 100, 0, 0]
    assert r.equity.get_column("drawdown_pct").to_list() == [0, 10, 0, 0]
    assert r.equity.get_column("position").to_list() == [1, 1, 1, 0]
    assert r.metrics["maxDrawdown"] == 100 and r.metrics["maxDrawdownPct"] == 10


def test_signal_levels_of_a_sliced_frame_are_read_row_by_row():
    # A strategy may return a slice of a bigger frame (its buffers then start at an offset): the
    # rows before the slice (a LONG with a NaN stop) must not count, nulls stay "no level", levels
    # on HOLD rows are dropped, and a bad row is reported by its row in the signals.
    frame = candles([(100, 100, 100, 100)] * 12)
    nan = float("nan")
    rows = [("LONG", nan, None)] * 3 + [("HOLD", None, None)] * 12
    rows[3] = ("LONG", None, 110.0)
    rows[4] = ("LONG", 95.0, None)
    rows[7] = ("SHORT", 105.0, 90.0)
    rows[9] = ("HOLD", 1.0, 2.0)
    schema = {"action": pl.String, "stop_loss": pl.Float64, "take_profit": pl.Float64}
    big = pl.DataFrame(rows, schema=schema, orient="row")
    out = validate_signals(big.slice(3, 12), frame, "test")
    assert out.get_column("action").to_list()[:5] == ["LONG", "LONG", "HOLD", "HOLD", "SHORT"]
    assert out.get_column("stop_loss").to_list() == [None, 95.0, None, None, 105.0] + [None] * 7
    assert out.get_column("take_profit").to_list() == [110.0, None, None, None, 90.0] + [None] * 7
    rows[12] = ("LONG", 101.0, None)  # stop above the close of 100
    with pytest.raises(ValidationError, match="LONG at row 9 whose stop_loss is not below"):
        validate_signals(pl.DataFrame(rows, schema=schema, orient="row").slice(3, 12), frame, "test")
    rows[12] = ("SHORT", float("-inf"), None)
    with pytest.raises(ValidationError, match="NaN or infinite stop_loss/take_profit on an entry row 9"):
        validate_signals(pl.DataFrame(rows, schema=schema, orient="row").slice(3, 12), frame, "test")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_capital": -5}, "initial_capital"),
        ({"initial_capital": 0}, "initial_capital"),
        ({"commission": "-0.001"}, "commission"),
        ({"leverage": 0}, "leverage"),
        ({"risk_per_trade": "1.5"}, "risk_per_trade"),
        ({"intrabar": "random"}, "intrabar"),
        ({"gap_fill": "close"}, "gap_fill"),
        ({"resolution": "7m"}, "resolution"),
        ({"initial_capital": "lots"}, "initial_capital"),
    ],
)
def test_bad_simulation_config_names_the_field(kwargs, field):
    with pytest.raises(ValidationError) as err:
        SimulationConfig(**kwargs)
    assert err.value.field == field


def test_run_backtest_refuses_bad_candles_before_running_the_strategy():
    with pytest.raises(ValidationError, match="is empty"):
        run_backtest(candles([(1, 1, 1, 1)]).head(0), "sma_crossover")


def test_metrics_of_a_run_without_trades_are_defined_and_json_safe():
    r = run([(100, 100, 100, 100)] * 5, {})
    m = r.metrics
    assert m["totalTrades"] == 0 and m["winRate"] == 0 and m["sharpeRatio"] == 0 and m["profitFactor"] == 0
    assert (
        m["finalCapital"] == 1000
        and m["maxDrawdown"] == 0
        and m["sortinoRatio"] == 0
        and m["calmarRatio"] == 0
    )
    json.dumps(m, allow_nan=False)


def test_metrics_without_a_losing_trade_say_unbounded_not_infinite():
    r = run([(100, 100, 100, 100), (100, 111, 100, 105), (105, 105, 105, 105)], {0: ("LONG", 90, 110)})
    m = r.metrics
    assert m["losingTrades"] == 0 and m["profitFactor"] is None and m["sortinoRatio"] is None
    json.dumps(m, allow_nan=False)


def test_metrics_agree_with_an_independent_computation():
    rng = np.random.default_rng(3)
    n = 3000
    c = 100 * np.cumprod(1 + rng.normal(0, 0.003, n))
    o = np.r_[c[0], c[:-1]]
    h, lo = np.maximum(o, c) * 1.002, np.minimum(o, c) * 0.998
    marks = {
        int(i): ("LONG" if rng.random() < 0.5 else "SHORT", None, None)
        for i in rng.choice(n - 1, 120, replace=False)
    }
    marks.update({int(i): ("EXIT", None, None) for i in rng.choice(n - 1, 60, replace=False)})
    cfg = SimulationConfig(initial_capital=1000, risk_per_trade="0.5", commission="0.0005", resolution="1h")
    r = run(list(zip(o, h, lo, c, strict=True)), marks, cfg)
    m, pnl = r.metrics, r.trades.get_column("pnl").to_numpy()
    eq = r.equity.get_column("equity").to_numpy()
    rets = np.diff(np.r_[1000.0, eq]) / np.r_[1000.0, eq][:-1]
    assert m["sharpeRatio"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(365 * 24), rel=1e-9)
    down = np.minimum(rets, 0)
    assert m["sortinoRatio"] == pytest.approx(
        rets.mean() / math.sqrt((down**2).mean()) * math.sqrt(365 * 24), rel=1e-9
    )
    peak, mdd, mdd_pct = 1000.0, 0.0, 0.0
    for e in eq:
        peak = max(peak, e)
        mdd, mdd_pct = max(mdd, peak - e), max(mdd_pct, (peak - e) / peak * 100)
    assert m["maxDrawdown"] == pytest.approx(mdd) and m["maxDrawdownPct"] == pytest.approx(mdd_pct)
    assert m["winningTrades"] == int((pnl > 0).sum()) and m["losingTrades"] == int((pnl < 0).sum())
    assert m["profitFactor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum())
    assert m["sqn"] == pytest.approx(math.sqrt(len(pnl)) * pnl.mean() / pnl.std(ddof=1))
    assert m["finalCapital"] == pytest.approx(eq[-1], rel=1e-12)
    years = n / (365 * 24)
    assert m["cagrPct"] == pytest.approx(((eq[-1] / 1000) ** (1 / years) - 1) * 100, rel=1e-9)
    assert m["exposurePct"] == pytest.approx((r.equity.get_column("position") != 0).sum() / n * 100)


def test_slippage_moves_entries_signal_exits_and_stops_against_the_trader_not_take_profits():
    # 1 % slippage. Entry at 100 -> 101 (a buy pays more); qty = 1000 / 101 (all-in cap).
    # Candle 1's low 94 touches SL 95 -> a stop market sell at 95 × 0.99 = 94.05.
    # Re-entry at candle 2's close 100 -> 101; candle 3 reaches TP 110: filled at 110, unslipped.
    cfg = SimulationConfig(initial_capital=1000, risk_per_trade=1, commission=0, slippage="0.01")
    r = run(
        [(100, 100, 100, 100), (100, 100, 94, 96), (100, 100, 100, 100), (100, 111, 100, 105), (105,) * 4],
        {0: ("LONG", 95, 110), 2: ("LONG", 95, 110)},
        cfg,
    )
    first, second = r.trades.rows(named=True)
    assert (first["entry_price"], first["exit_price"], first["exit_reason"]) == (101, 95 * 0.99, "SL")
    assert first["quantity"] == pytest.approx(1000 / 101)
    assert (second["entry_price"], second["exit_price"], second["exit_reason"]) == (101, 110, "TP")


def test_range_slippage_adds_a_fraction_of_the_fill_candles_high_low():
    # 0.1 % + a quarter of the range. Entry candle range 4: 100 + 0.1 + 1 = 101.1. EXIT at candle 1
    # (range 8): a sell at 96 - 0.096 - 2 = 93.904. Short-side fills mirror it.
    cfg = SimulationConfig(initial_capital=1000, risk_per_trade=1, commission=0, slippage="0.001",
                           slippage_range="0.25")  # fmt: skip
    r = run(
        [(100, 102, 98, 100), (101, 103, 95, 96), (96, 96, 96, 96)],
        {0: ("LONG", None, None), 1: ("EXIT", None, None)},
        cfg,
    )
    t = r.trades.row(0, named=True)
    assert t["entry_price"] == pytest.approx(101.1, abs=1e-12) and t["exit_price"] == pytest.approx(
        93.904, abs=1e-12
    )
    assert t["pnl"] == pytest.approx(1000 / 101.1 * (93.904 - 101.1))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("slippage", "-0.001", "slippage must be in [0, 0.1)"), ("slippage", "0.5", "slippage must be in [0, 0.1)"),
     ("slippage_range", "2", "slippage_range must be in [0, 1]"), ("slippage", "abc", "slippage must be a number")],
)  # fmt: skip
def test_bad_slippage_is_refused_by_name(field, value, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        SimulationConfig(**{field: value})
