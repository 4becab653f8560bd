"""The reconciler's four proofs (issue 7) on real Postgres + Redis + the simulator replaying real
BTCUSDT 1m candles (../shared/data/BTCUSDT-1m-2024-01.parquet, from 2024-01-02 00:00 UTC):

- money truth: 4 hours of live ticks (every candle) and reconcile passes (every minute) for four
  spot subscribers of different capital and risk; Σ realised P&L of each subscriber's closed trades
  equals the simulator's ledger change of that account minus what its open position cost, exactly;
- parity: the same SMA crossover (fast 3, slow 12, SL 0.15 %, TP 0.2 %, long+short) backtested on
  those 6 hours and run live on the B-BTC_USDT futures market with zero slippage gives the same
  trades (entry/exit candle, side, exit reason; prices within half a tick); and again with 5 bps of
  slippage on both sides (the simulator's and the backtest's: market fills and stop losses slipped,
  take profits not);
- crash: `xcoin reconcile --once` SIGKILLed in the middle of its stop-loss batch, then run again,
  ends exactly as a twin world reconciled without a kill;
- faults: 10 % 5xx/timeouts/429 on every status call (and a few minutes of a status endpoint fully
  down) during a replay close no trade wrongly, and every trade closes in the end.

Rules that make backtest and live differ (also in docs/backtesting.md, "Backtest–live parity"):
- spot stop loss: watched by the reconciler, not resting on the exchange; it sells at market at the
  first pass whose last price (the newest close) is at or through the stop: exit at that close, on
  that candle — the backtest exits at the level on the first candle whose low touches it. Spot take
  profits rest as limit sells and fill like the backtest (level, or the open on a gap).
- futures tick: live levels are rounded to the tick (half-even) when placed, and fills are on the tick
  (entry/exit at market = the close rounded). The backtest uses the raw levels and prices unless
  `SimulationConfig(levels_on_tick=True, market=...)`; prices then differ by at most half a tick.
- gap through the take profit on a candle that also touches the stop: the backtest fills the take
  profit at the open; the simulator's futures desk (stop-loss-first) fills the stop.
- fees: the backtest's `commission` must be the market's (simulator: spot 0.1 %, futures 0.05 %).
- sizing: live sizes every entry on the subscription's capital; the backtest compounds on its equity,
  so quantities (not the trades' timing) differ; both round down to the market step.
- TP/SL are active from the candle after the fill in both; the live tick at a candle's close runs
  after that minute's reconcile pass, so a stop exit and a new entry share a candle as in the backtest.
- the backtest closes what is open on the last candle (END); live leaves it open.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from tests.conftest import shared_data_file
from xcoin_trading.backtest.engine import SimulationConfig, simulate
from xcoin_trading.exchange.markets import FUTURES_MARKETS
from xcoin_trading.exchange.simulator import SimConfig
from xcoin_trading.live.coordinator import execute, live_context, run_candle_close
from xcoin_trading.live.reconcile import reconcile_once
from xcoin_trading.live.registry import StrategySettings
from xcoin_trading.services import strategies
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.lifecycle import ExitReason
from xcoin_trading.store.models import Order, Strategy, Subscription, Trade
from xcoin_trading.strategy import compute_signals, load_strategy, normalize_candles

DATA = "BTCUSDT-1m-2024-01.parquet"
T0 = datetime(2024, 1, 2, tzinfo=UTC)  # the replay's clock starts one day into the file
SMA = {"fast": 3, "slow": 12, "sl_pct": 0.0015, "tp_pct": 0.002}
LOOKBACK = 40  # candles per live tick: > slow + 1
HOURS = 4
UNRESOLVED = ("INTENT", "SENDING", "UNKNOWN")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _world(factory, n: int, symbol: str = "BTCUSDT", slippage: Decimal = Decimal(0), **kwargs):
    sim = {"replay": shared_data_file(DATA), "symbol": "BTCUSDT", "config": SimConfig(slippage=slippage)}
    return factory(n, servers=True, symbol=symbol, sim_kwargs=sim, **kwargs)


def _use_sma(world, mode: str) -> None:
    with session_scope(world.settings) as session:
        row = session.get(Strategy, world.strategy_id)
        strategies.update_strategy(
            session, row.author_id, row.id, builtin="sma_crossover", source=None,
            params={**SMA, "mode": mode}, lookback=LOOKBACK,
        )  # fmt: skip


def _set_subscriptions(world, terms: list[tuple[str, str]]) -> list[int]:
    """(capital, risk per trade) per subscriber, in subscription order."""
    subs = sorted(world.keys)
    with session_scope(world.settings) as session:
        for sub_id, (capital, risk) in zip(subs, terms, strict=True):
            row = session.get(Subscription, sub_id)
            row.capital, row.risk_per_trade = Decimal(capital), Decimal(risk)
    return subs


def _rows(world, model, *where):
    with session_scope(world.settings) as session:
        return list(session.scalars(sa.select(model).where(*where).order_by(model.id)))


def _replay(world, symbol: str, start: datetime, minutes: int, *, tick: bool = True, each=None) -> int:
    """Minute by minute: the exchange moves, the reconciler passes, then the candle's live tick.
    Returns how many accounts the reconciler could not ask, summed over the passes."""
    ctx = live_context(world.settings)
    unreachable = 0
    for m in range(1, minutes + 1):
        moment = start + timedelta(minutes=m)
        if each is not None:
            each(m, moment)
        world.admin.advance(to_ms=_ms(moment))
        unreachable += reconcile_once(ctx, now=moment).failed_accounts
        if tick:
            [report] = run_candle_close(ctx, symbol, "1m", moment, now=moment + timedelta(seconds=1))
            assert report.status in ("COMPLETED", "NO_SIGNAL"), (moment, report.status, report.error)
    return unreachable


def _ledger_change(world, sub_id: int) -> dict[str, Decimal]:
    """Σ (free + locked) deltas per currency of the account's ledger, deposits excluded."""
    out: dict[str, Decimal] = Counter()
    for entry in world.admin.ledger(world.keys[sub_id].api_key):
        if entry["kind"] != "deposit":
            out[entry["currency"]] += Decimal(entry["free_delta"]) + Decimal(entry["locked_delta"])
    return out


# ---- money truth ------------------------------------------------------------------------------------


def test_money_truth_realised_pnl_equals_each_accounts_ledger_change_to_the_last_unit(live_world_factory):
    world = _world(live_world_factory, 4)
    _use_sma(world, "long_only")
    # Capped by capital (all-in) and risk-sized ones, from 300 to 8000 USDT.
    subs = _set_subscriptions(
        world, [("300", "0.02"), ("1000", "0.001"), ("2500", "0.0005"), ("8000", "0.05")]
    )
    world.admin.advance(to_ms=_ms(T0))
    _replay(world, "BTCUSDT", T0, HOURS * 60)

    closed_total = 0
    exits = Counter()
    for sub_id in subs:
        trades = _rows(world, Trade, Trade.subscription_id == sub_id)
        assert {t.status for t in trades} <= {"CLOSED", "OPEN"}, [t.status for t in trades]
        closed = [t for t in trades if t.status == "CLOSED"]
        open_ = [t for t in trades if t.status == "OPEN"]
        closed_total += len(closed)
        exits.update(t.exit_type for t in closed)
        # Each trade's P&L by hand from its own fills: (exit − entry) × qty − both fees.
        for t in closed:
            assert t.pnl == (t.exit_price - t.entry_price) * t.quantity - t.entry_fee - t.exit_fee
        realised = sum((t.pnl for t in closed), Decimal(0))
        change = _ledger_change(world, sub_id)
        # What the open position cost is still in the account as coins, not as USDT.
        open_cost = sum((t.entry_price * t.quantity + t.entry_fee for t in open_), Decimal(0))
        assert change["USDT"] == realised - open_cost, sub_id
        assert change["BTC"] == sum((t.quantity for t in open_), Decimal(0)), sub_id
        balances = world.admin.balances(world.keys[sub_id].api_key)
        usdt = Decimal(balances["USDT"]["balance"]) + Decimal(balances["USDT"]["locked_balance"])
        assert usdt == Decimal(10000) + change["USDT"]
        with session_scope(world.settings) as session:
            sub = session.get(Subscription, sub_id)
            assert (sub.total_trades, sub.total_pnl) == (len(closed), realised)
            assert sub.winning_trades == sum(1 for t in closed if t.pnl > 0)
            assert sub.losing_trades == len(closed) - sub.winning_trades
        assert not [o for o in _rows(world, Order, Order.subscription_id == sub_id) if o.status in UNRESOLVED]
    assert closed_total >= 4 * 8, closed_total  # many trades, every way a spot trade ends
    assert {"TAKE_PROFIT", "STOP_LOSS", "SIGNAL"} <= set(exits), exits


# ---- parity ---------------------------------------------------------------------------------------


def _backtest(mode: str, start: datetime, hours: int, config: SimulationConfig) -> pl.DataFrame:
    """The backtest on the live window: candles from `LOOKBACK` before the first live tick; signals
    before that tick are HOLD (live had not started), so both begin flat on the same candle."""
    frame = pl.read_parquet(shared_data_file(DATA)).filter(
        (pl.col("open_time") >= start - timedelta(minutes=LOOKBACK))
        & (pl.col("open_time") < start + timedelta(hours=hours))
    )
    candles = normalize_candles(frame)
    strategy = load_strategy("sma_crossover")
    signals = compute_signals(strategy, candles, strategy.resolve_params({**SMA, "mode": mode}))
    live = candles.get_column("open_time") + 60_000 > _ms(start)  # closes at a live tick
    signals = signals.with_columns(
        pl.when(pl.Series(live)).then(pl.col("action")).otherwise(pl.lit("HOLD", signals.schema["action"]))
    )
    return simulate(candles, signals, config).trades


@pytest.mark.parametrize(
    ("slippage", "hours", "at_least"),
    [("0", HOURS, 15), ("0.0005", 3, 10)],  # the simulator's --slippage, and the backtest's, 5 bps
)
def test_parity_backtest_and_live_futures_replay_give_the_same_trades(
    live_world_factory, slippage, hours, at_least
):
    market = FUTURES_MARKETS["B-BTC_USDT"]
    world = _world(live_world_factory, 1, symbol=market.pair, slippage=Decimal(slippage))
    _use_sma(world, "long_short")
    [sub_id] = _set_subscriptions(world, [("1000", "0.02")])
    world.admin.advance(to_ms=_ms(T0))
    _replay(world, market.pair, T0, hours * 60)

    config = SimulationConfig(
        initial_capital=Decimal(1000), risk_per_trade=Decimal("0.02"), leverage=Decimal(2),
        commission=Decimal("0.0005"), market=market, levels_on_tick=True, slippage=Decimal(slippage),
    )  # fmt: skip
    expected = _backtest("long_short", T0, hours, config)
    live = _rows(world, Trade, Trade.subscription_id == sub_id)
    assert {t.status for t in live} <= {"CLOSED", "OPEN"}
    closed = [t for t in live if t.status == "CLOSED"]
    done = expected.filter(pl.col("exit_reason") != "END")
    assert len(closed) == done.height and done.height >= at_least, (len(closed), done.height)
    half_tick = market.tick / 2
    for got, want in zip(closed, done.iter_rows(named=True), strict=True):
        where = f"trade entered {got.entry_time}"
        assert got.entry_time == want["entry_time"], where
        assert got.exit_time == want["exit_time"], where
        assert got.side == want["side"], where
        assert got.exit_type == ExitReason.of_backtest(want["exit_reason"]), where
        assert abs(got.entry_price - Decimal(repr(want["entry_price"]))) <= half_tick, where
        assert abs(got.exit_price - Decimal(repr(want["exit_price"]))) <= half_tick, where
    assert {ExitReason.of_backtest(r) for r in done["exit_reason"]} == {"STOP_LOSS", "TAKE_PROFIT", "SIGNAL"}
    # A position the backtest closes at the end (END) is still open live, entered on the same candle.
    still_open = [t.entry_time for t in live if t.status == "OPEN"]
    ended = expected.filter(pl.col("exit_reason") == "END")["entry_time"].to_list()
    assert ended == still_open[: len(ended)]
    # And the money: the account's USDT moved by Σ realised P&L minus the open position's entry fee.
    open_fees = sum((t.entry_fee for t in live if t.status == "OPEN"), Decimal(0))
    assert _ledger_change(world, sub_id)["USDT"] == sum((t.pnl for t in closed), Decimal(0)) - open_fees


# ---- crash ----------------------------------------------------------------------------------------


def _enter_all(world, ctx, at: datetime, sl: float, tp: float) -> None:
    """Every subscriber of `world` buys at `at` (the constant LONG strategy), then the strategy holds."""
    with session_scope(world.settings) as session:
        row = session.get(Strategy, world.strategy_id)
        strategies.update_strategy(
            session, row.author_id, row.id, params={"action": "LONG", "sl": sl, "tp": tp}
        )
        row.validation_status = "VALID"
        settings = StrategySettings.from_row(row)
    # This world's strategy only (the other world's shares the candle but not the exchange).
    report = execute(ctx, settings, at, at + timedelta(seconds=1), 60_000)
    assert report.status == "COMPLETED" and report.trades_created == len(world.keys), report.error
    world.set_action("HOLD")


def _first_close_at_or_below(level: Decimal, after: datetime) -> datetime:
    """Close time of the first candle after `after` whose close is at or below `level` (plain scan)."""
    frame = pl.read_parquet(shared_data_file(DATA)).filter(pl.col("open_time") >= after)
    for open_time, close in zip(frame["open_time"], frame["close"], strict=True):
        if Decimal(repr(close)) <= level:
            return open_time + timedelta(minutes=1)
    raise AssertionError("the stop is never crossed in the file")


def _final_state(world) -> list[tuple]:
    """Per subscriber (in order): its trade, its orders and its counters, without ids or timestamps
    of our own; and what the exchange holds for it."""
    out = []
    for sub_id in sorted(world.keys):
        [trade] = _rows(world, Trade, Trade.subscription_id == sub_id)
        orders = sorted(
            (o.leg, o.side, o.order_type, o.status, o.quantity, o.filled_quantity, o.avg_price, o.fee)
            for o in _rows(world, Order, Order.subscription_id == sub_id)
        )
        with session_scope(world.settings) as session:
            sub = session.get(Subscription, sub_id)
            counters = (sub.total_trades, sub.winning_trades, sub.losing_trades, sub.total_pnl)
        fills = sorted(
            (f.side, f.price, f.quantity, f.fee_amount)
            for f in world.fills(sub_id, "buy") + world.fills(sub_id, "sell")
        )
        out.append(
            (
                (trade.status, trade.side, trade.quantity, trade.entry_price, trade.exit_price, trade.exit_type,
                 trade.entry_fee, trade.exit_fee, trade.pnl, trade.pnl_pct, trade.exit_time),
                orders, counters, fills, _ledger_change(world, sub_id),
            )
        )  # fmt: skip
    return out


def test_crash_reconciler_killed_mid_batch_then_restarted_ends_as_an_uninterrupted_twin(live_world_factory):
    n = 30
    killed = _world(live_world_factory, n)
    twin = _world(live_world_factory, n)
    twin.set_action("HOLD")
    killed.admin.advance(to_ms=_ms(T0))
    twin.admin.advance(to_ms=_ms(T0))
    ctx = live_context(killed.settings)
    _enter_all(killed, ctx, T0, sl=0.002, tp=0.05)
    stop = _rows(killed, Trade)[0].stop_loss
    crossed = _first_close_at_or_below(stop, T0)
    killed.admin.advance(to_ms=_ms(crossed))

    # Every account's stop is crossed: one batch of 30 × (cancel the take profit, market sell), slowed
    # down so the kill lands inside it.
    killed.admin.set_faults(latency_ms=120, endpoints=["orders/create", "orders/cancel"])
    xcoin = str(Path(sys.executable).parent / "xcoin")
    proc = subprocess.Popen([xcoin, "reconcile", "--once", "--no-audit"], env=killed.env(XCOIN_FANOUT_CONCURRENCY="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    sold = killed.kill_once_filled(proc, "sell", at_least=4)
    assert 4 <= sold < n, f"the kill must land mid-batch ({sold} of {n} sold)"
    stuck = [o for o in _rows(killed, Order) if o.status in UNRESOLVED]
    assert stuck, "the kill left intents to resolve"
    killed.admin.clear_faults()
    rerun = subprocess.run([xcoin, "reconcile", "--once", "--no-audit"], env=killed.env(), capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    # The twin: same accounts, same candles, same entry, reconciled once without a kill.
    ctx_twin = live_context(twin.settings)
    ctx_twin.api_url = ctx_twin.public_url = twin.sim.url
    _enter_all(twin, ctx_twin, T0, sl=0.002, tp=0.05)
    twin.admin.advance(to_ms=_ms(crossed))
    reconcile_once(ctx_twin, now=crossed)

    after_crash, uninterrupted = _final_state(killed), _final_state(twin)
    assert after_crash == uninterrupted
    for (trade, orders, counters, fills, ledger), sub_id in zip(
        after_crash, sorted(killed.keys), strict=True
    ):
        assert trade[0] == "CLOSED" and trade[5] == "STOP_LOSS", sub_id
        assert [f[0] for f in fills] == ["buy", "sell"], "exactly one entry and one exit on the exchange"
        assert counters == (1, 0, 1, trade[8])
        assert ledger["USDT"] == trade[8] and ledger["BTC"] == 0
        assert not [o for o in orders if o[3] in UNRESOLVED]


# ---- faults ---------------------------------------------------------------------------------------

STATUS_CALLS = ["status_multiple", "ticker"]
FLAKY = {"error_5xx": 0.04, "timeout": 0.03, "error_429": 0.03, "timeout_s": 0.2, "retry_after_s": 0.05}


def test_faults_on_a_tenth_of_status_calls_close_no_trade_wrongly_and_every_trade_in_the_end(
    live_world_factory,
):
    world = _world(live_world_factory, 3)
    _use_sma(world, "long_only")
    subs = _set_subscriptions(world, [("500", "0.02"), ("2000", "0.001"), ("5000", "0.01")])
    world.admin.advance(to_ms=_ms(T0))
    world.admin.set_faults({**FLAKY, "endpoints": STATUS_CALLS}, seed=7)

    def outage(minute: int, _moment: datetime) -> None:  # minutes 40-45: status calls fully down
        if minute == 40:
            world.admin.set_faults({"error_5xx": 1.0, "endpoints": STATUS_CALLS})
        elif minute == 46:
            world.admin.set_faults({**FLAKY, "endpoints": STATUS_CALLS}, seed=8)

    unreachable = _replay(world, "BTCUSDT", T0, 180, each=outage)
    # Then no more live ticks: the reconciler, still under faults, follows what is open until it closes.
    later = T0 + timedelta(minutes=180)
    for _ in range(60):
        if not [t for t in _rows(world, Trade) if t.status != "CLOSED"]:
            break
        unreachable += _replay(world, "BTCUSDT", later, 10, tick=False)
        later += timedelta(minutes=10)
    injected = world.admin.faults()["injected"]
    world.admin.clear_faults()
    assert unreachable >= 3 and sum(injected.values()) >= 20, (unreachable, injected)  # the outage was felt

    trades = _rows(world, Trade)
    assert len(trades) >= 3 * 5 and {t.status for t in trades} == {"CLOSED"}, [t.status for t in trades]
    for sub_id in subs:
        mine = [t for t in trades if t.subscription_id == sub_id]
        sells = world.fills(sub_id, "sell")
        assert len(sells) == len(mine) == len(world.fills(sub_id, "buy")), "one entry and one exit per trade"
        for trade in mine:
            # The close is the exchange's: the filled exit order of this trade, its price and fee.
            [exit_order] = [o for o in _rows(world, Order, Order.trade_id == trade.id, Order.status == "FILLED")
                            if o.leg != "ENTRY"]  # fmt: skip
            on_exchange = world.order_by_client_id(sub_id, exit_order.client_order_id)
            assert on_exchange.status == "filled" and on_exchange.filled_quantity == trade.quantity
            assert (trade.exit_price, trade.exit_fee) == (on_exchange.avg_price, on_exchange.fee_amount)
            assert (
                trade.exit_type
                == {"TAKE_PROFIT": "TAKE_PROFIT", "STOP_LOSS": "STOP_LOSS", "EXIT": "SIGNAL"}[exit_order.leg]
            )
        change = _ledger_change(world, sub_id)
        assert change["USDT"] == sum((t.pnl for t in mine), Decimal(0)) and change["BTC"] == 0
        assert not [o for o in _rows(world, Order, Order.subscription_id == sub_id) if o.status in UNRESOLVED]
