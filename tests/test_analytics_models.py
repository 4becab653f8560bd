"""Models built from a fixture trade book equal aggregates computed here with plain loops."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.fixtures.analytics import EMAILS, NOW


def _query(settings, sql):
    from xcoin_trading.analytics.queries import run_query

    return run_query(settings, sql).records()


@pytest.fixture()
def built(trade_book):
    from xcoin_trading.analytics import build_all

    summary = build_all(trade_book.settings)
    return trade_book, summary


def test_every_model_builds_and_every_data_test_passes_on_a_clean_book(built):
    book, summary = built
    assert {m.name for m in summary.models} >= {
        "daily_pnl", "strategy_performance", "subscription_performance", "positions_current",
        "order_history_summary", "execution_health", "backtest_leaderboard",
    }  # fmt: skip
    assert summary.failed_tests == []
    assert {s.table: s.total for s in summary.snapshots}["trades"] == len(book.trades)


def test_daily_pnl_per_user_strategy_day_with_running_total(built):
    book, _ = built
    expected = defaultdict(lambda: [0, 0, 0, Decimal(0), Decimal(0)])
    for t in book.trades:
        if t["status"] != "CLOSED":
            continue
        e = expected[(t["user_id"], t["strategy_id"], t["exit_time"].date())]
        e[0] += 1
        e[1] += t["pnl"] > 0
        e[2] += t["pnl"] < 0
        e[3] += t["pnl"]
        e[4] += t["fees"]
    running: dict[tuple, Decimal] = defaultdict(Decimal)
    cumulative = {}
    for key in sorted(expected):
        running[key[:2]] += expected[key][3]
        cumulative[key] = running[key[:2]]

    rows = _query(book.settings, "SELECT * FROM daily_pnl")
    got = {(r["user_id"], r["strategy_id"], r["day"]): r for r in rows}
    assert set(got) == set(expected)
    for key, (trades, wins, losses, pnl, fees) in expected.items():
        r = got[key]
        assert (r["trades"], r["wins"], r["losses"]) == (trades, wins, losses), key
        assert r["realized_pnl"] == pnl and r["fees"] == fees, key
        assert r["cumulative_pnl"] == cumulative[key], key


def test_strategy_performance_is_the_seeds_block_per_user_and_strategy(built):
    book, _ = built
    expected = defaultdict(lambda: [0, 0, Decimal(0)])
    for t in book.trades:
        if t["status"] == "CLOSED":
            e = expected[(t["user_id"], t["strategy_id"])]
            e[0] += 1
            e[1] += t["pnl"] > 0
            e[2] += t["pnl"]
    running = {
        (s["user_id"], s["strategy_id"])
        for s in book.subscriptions
        if not s.get("paused") and not s.get("cancelled")
    }
    rows = {
        (r["user_id"], r["strategy_id"]): r
        for r in _query(book.settings, "SELECT * FROM strategy_performance")
    }
    assert set(rows) == {(s["user_id"], s["strategy_id"]) for s in book.subscriptions}
    for key, (trades, wins, pnl) in expected.items():
        r = rows[key]
        assert r["trades"] == trades and r["realized_pnl"] == pnl
        assert r["win_rate"] == pytest.approx(round(100 * wins / trades, 2))
        assert r["is_active"] == (key in running)


def test_order_history_summary_counts_volume_and_fees(built):
    book, _ = built
    expected = defaultdict(
        lambda: {
            "total": 0,
            "filled": 0,
            "pending": 0,
            "cancelled": 0,
            "volume": Decimal(0),
            "fees": Decimal(0),
        }
    )
    for o in book.orders:
        e = expected[o["user_id"]]
        e["total"] += 1
        e["filled"] += o["status"] == "FILLED"
        e["pending"] += o["status"] == "OPEN"
        e["cancelled"] += o["status"] == "CANCELLED"
        e["volume"] += o["filled"] * o["avg_price"] if o["avg_price"] is not None else 0
        e["fees"] += o["fee"]
    rows = {r["user_id"]: r for r in _query(book.settings, "SELECT * FROM order_history_summary")}
    assert set(rows) == set(expected)
    for user_id, e in expected.items():
        r = rows[user_id]
        assert (r["total_orders"], r["filled_orders"], r["pending_orders"], r["cancelled_orders"]) == (
            e["total"], e["filled"], e["pending"], e["cancelled"],
        )  # fmt: skip
        assert r["volume"] == e["volume"] and r["fees"] == e["fees"]


def test_subscription_performance_and_open_positions(built):
    book, _ = built
    closed = defaultdict(list)
    open_ = defaultdict(list)
    for t in book.trades:
        (closed if t["status"] == "CLOSED" else open_)[t["subscription_id"]].append(t)
    rows = {r["subscription_id"]: r for r in _query(book.settings, "SELECT * FROM subscription_performance")}
    for sub in book.subscriptions:
        r = rows[sub["id"]]
        pnl = sum((t["pnl"] for t in closed[sub["id"]]), Decimal(0))
        assert r["closed_trades"] == len(closed[sub["id"]]) and r["open_trades"] == len(open_[sub["id"]])
        assert r["realized_pnl"] == pnl
        assert r["return_pct"] == pytest.approx(float(pnl / sub["capital"] * 100), abs=1e-4)
        assert r["is_paused"] == bool(sub.get("paused")) and r["is_active"] == (not sub.get("cancelled"))
    positions = _query(book.settings, "SELECT * FROM positions_current")
    assert sorted(p["trade_id"] for p in positions) == sorted(
        t["id"] for t in book.trades if t["status"] == "OPEN"
    )
    for p in positions:
        t = next(t for t in book.trades if t["id"] == p["trade_id"])
        assert p["notional"] == t["entry_price"] * t["quantity"]


def test_execution_health_counts_median_p95_and_failure_reasons(built):
    book, _ = built
    rows = {r["strategy_id"]: r for r in _query(book.settings, "SELECT * FROM execution_health")}
    for strategy_id in book.strategies.values():
        mine = [e for e in book.executions if e["strategy_id"] == strategy_id]
        r = rows[strategy_id]
        assert r["executions"] == len(mine)
        assert r["failed"] == sum(e["status"] == "FAILED" for e in mine)
        assert r["completed"] == sum(e["status"] == "COMPLETED" for e in mine)
        durations = sorted(e["duration_ms"] for e in mine)
        pos = 0.95 * (len(durations) - 1)  # linear interpolation between closest ranks
        lo = int(pos)
        p95 = durations[lo] + (durations[min(lo + 1, len(durations) - 1)] - durations[lo]) * (pos - lo)
        mid = len(durations) // 2
        median = durations[mid] if len(durations) % 2 else (durations[mid - 1] + durations[mid]) / 2
        assert r["p95_duration_ms"] == pytest.approx(p95) and r["median_duration_ms"] == pytest.approx(median)
        reasons = defaultdict(int)
        for e in mine:
            if e["status"] == "FAILED":
                reasons[e["error"].splitlines()[0]] += 1
        assert {x["reason"]: x["executions"] for x in (r["failure_reasons"] or [])} == reasons


def test_backtest_leaderboard_ranks_by_sharpe(built):
    book, _ = built
    rows = _query(book.settings, "SELECT * FROM backtest_leaderboard ORDER BY rank")
    assert [r["sharpe_ratio"] for r in rows] == sorted((b["sharpe"] for b in book.backtests), reverse=True)
    best = {}
    for b in book.backtests:
        best[b["strategy_code"]] = max(best.get(b["strategy_code"], -99), b["sharpe"])
    assert {r["strategy_code"]: r["sharpe_ratio"] for r in rows if r["rank_in_strategy"] == 1} == best


def test_pnl_summary_7d_with_ticker_prices(built):
    from xcoin_trading.analytics.pnl import pnl_summary, user_id_for_email

    book, _ = built
    user = user_id_for_email(book.settings, EMAILS[0].upper())
    start = NOW.date() - timedelta(days=6)
    mine = [t for t in book.trades if t["user_id"] == user]
    closed = [t for t in mine if t["status"] == "CLOSED" and t["exit_time"].date() >= start]
    prices = {"BTCUSDT": Decimal("61000.5"), "B-ETH_USDT": Decimal("2950")}  # no SOLUSDT price
    unrealized = Decimal(0)
    for t in mine:
        if t["status"] == "OPEN" and t["symbol"] in prices:
            direction = -1 if t["side"] == "SHORT" else 1
            unrealized += (
                direction * (prices[t["symbol"]] - t["entry_price"]) * t["quantity"] - t["entry_fee"]
            )
    realized = sum((t["pnl"] for t in closed), Decimal(0))
    wins = [t["pnl"] for t in closed if t["pnl"] > 0]
    losses = [t["pnl"] for t in closed if t["pnl"] < 0]

    out = pnl_summary(book.settings, user, "7d", prices=prices, now=NOW)
    assert out["totalRealizedPnl"] == realized
    assert out["totalUnrealizedPnl"] == unrealized
    assert out["totalPnl"] == realized + unrealized
    assert out["totalTrades"] == len(closed)
    assert out["winRate"] == pytest.approx(round(100 * len(wins) / len(closed), 2))
    assert out["averageWin"] == (sum(wins) / len(wins)).quantize(Decimal("1e-8"))
    assert out["profitFactor"] == pytest.approx(float(sum(wins) / -sum(losses)), abs=1e-4)
    assert out["activeStrategies"] == 3
    assert [d["date"] for d in out["dailyPnl"]] == [(start + timedelta(days=i)).isoformat() for i in range(7)]
    assert out["dailyPnl"][-1]["cumulativePnl"] == realized
    by_strategy = defaultdict(Decimal)
    for t in closed:
        by_strategy[t["strategy_id"]] += t["pnl"]
    assert {s["strategyId"]: s["pnl"] for s in out["strategyPerformance"]} == {
        sid: by_strategy.get(sid, Decimal(0)) for sid in book.strategies.values()
    }
    has_open_sol = any(t["status"] == "OPEN" and t["symbol"] == "SOLUSDT" for t in mine)
    assert out["unpricedSymbols"] == (["SOLUSDT"] if has_open_sol else [])


def test_pnl_summary_without_prices_has_zero_unrealized_and_names_unpriced_symbols(built):
    from xcoin_trading.analytics.pnl import pnl_summary

    book, _ = built
    user = book.users[EMAILS[0]]
    out = pnl_summary(book.settings, user, "all", now=NOW)
    closed = [t for t in book.trades if t["user_id"] == user and t["status"] == "CLOSED"]
    assert out["totalUnrealizedPnl"] == 0 and out["totalRealizedPnl"] == sum(t["pnl"] for t in closed)
    open_symbols = sorted(
        {t["symbol"] for t in book.trades if t["user_id"] == user and t["status"] == "OPEN"}
    )
    assert out["unpricedSymbols"] == open_symbols
    assert (out["unrealizedPnlNote"] is None) == (not open_symbols)


def test_pnl_summary_refuses_an_unknown_period(built):
    from xcoin_trading.analytics.pnl import pnl_summary
    from xcoin_trading.errors import ValidationError

    book, _ = built
    with pytest.raises(ValidationError) as err:
        pnl_summary(book.settings, book.users[EMAILS[0]], "2w")
    assert err.value.field == "period" and "1d, 7d, 30d, all" in err.value.reason


def test_orders_summary_and_positions_for_the_api(built):
    from xcoin_trading.analytics.pnl import orders_summary, positions_current

    book, _ = built
    user = book.users[EMAILS[1]]
    summary = orders_summary(book.settings, user)
    mine = [o for o in book.orders if o["user_id"] == user]
    assert summary["totalOrders"] == len(mine)
    assert summary["totalFees"] == sum(o["fee"] for o in mine)
    positions = positions_current(book.settings, user, {"BTCUSDT": "60000"})
    assert positions["summary"]["openPositions"] == sum(
        1 for t in book.trades if t["user_id"] == user and t["status"] == "OPEN"
    )
    assert orders_summary(book.settings, 999_999)["totalOrders"] == 0
