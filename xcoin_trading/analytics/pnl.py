"""P&L, positions and order summaries for one user, read from the warehouse models (never the store).

These are the functions the REST API serves (`/api/positions/pnl`, `/current`, `/orders` summary) and
`xcoin pnl` prints. Money is exact `Decimal` (trailing zeros stripped); ratios are floats.
Figures are as fresh as the last `xcoin analytics build` / Dagster run: `asOf` says when that was.

Conventions: periods are whole UTC days ending today (`1d` = today, `7d` = today and the 6 days before,
`all` = everything); a trade counts on the day it closed. winRate is a percentage of closed trades;
breakeven trades are neither wins nor losses. profitFactor = gross profit / |gross loss|, None when
there was no loss. Unrealised P&L = (price - entry) x qty (reversed for SHORT) minus the entry fee
already paid, for the positions whose symbol has a price in `prices`; without one it is 0 and the
result says which symbols were unpriced.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from xcoin_trading.analytics.warehouse import BUILDS_TABLE, connect
from xcoin_trading.config import Settings
from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.money import trimmed

PERIODS: dict[str, int | None] = {"1d": 1, "7d": 7, "30d": 30, "all": None}
ZERO = Decimal(0)
AVERAGE_QUANTUM = Decimal("1e-8")


def _rows(con: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _as_of(con: Any, model: str) -> str | None:
    row = con.execute(f"SELECT built_at FROM {BUILDS_TABLE} WHERE model = ?", [model]).fetchone()
    return row[0].astimezone(UTC).isoformat() if row and row[0] else None


def user_id_for_email(settings: Settings, email: str) -> int:
    """The user's id from the users snapshot (analytics do not read the trading database)."""
    address = (email or "").strip().lower()
    if not address:
        raise ValidationError("user", "is empty; give the user's email")
    with connect(settings) as con:
        row = con.execute("SELECT id FROM users WHERE email = ?", [address]).fetchone()
    if row is None:
        raise NotFound(f"user {address} not found in the analytics snapshot (run `xcoin analytics build`)")
    return int(row[0])


def _period_start(period: str, today: date) -> date | None:
    if period not in PERIODS:
        raise ValidationError("period", f"must be one of {', '.join(PERIODS)}, got {period!r}")
    days = PERIODS[period]
    return None if days is None else today - timedelta(days=days - 1)


def _ratio(numerator: Decimal, denominator: Decimal, digits: int) -> float | None:
    return None if not denominator else round(float(numerator / denominator), digits)


def positions_current(
    settings: Settings, user_id: int, prices: dict[str, Decimal] | None = None
) -> dict[str, Any]:
    """Open positions with unrealised P&L at `prices` (symbol -> last price), and a summary block."""
    prices = {k: Decimal(str(v)) for k, v in (prices or {}).items()}
    with connect(settings) as con:
        rows = _rows(
            con, "SELECT * FROM positions_current WHERE user_id = ? ORDER BY entry_time, trade_id", [user_id]
        )
        as_of = _as_of(con, "positions_current")
    positions, total_unrealized, total_notional, missing = [], ZERO, ZERO, set()
    for r in rows:
        price = prices.get(r["symbol"])
        unrealized = pct = None
        if price is not None and r["entry_price"] is not None:
            direction = -1 if r["side"] == "SHORT" else 1
            unrealized = direction * (price - r["entry_price"]) * r["quantity"] - r["entry_fee"]
            pct = _ratio(unrealized * 100, r["notional"], 4) if r["notional"] else None
            total_unrealized += unrealized
        else:
            missing.add(r["symbol"])
        total_notional += r["notional"] or ZERO
        positions.append(
            {
                "tradeId": r["trade_id"],
                "subscriptionId": r["subscription_id"],
                "strategyId": r["strategy_id"],
                "strategyCode": r["strategy_code"],
                "strategyName": r["strategy_name"],
                "symbol": r["symbol"],
                "marketType": r["market_type"],
                "side": r["side"],
                "quantity": trimmed(r["quantity"]),
                "leverage": trimmed(r["leverage"]),
                "entryPrice": trimmed(r["entry_price"]),
                "entryTime": r["entry_time"].isoformat() if r["entry_time"] else None,
                "stopLoss": trimmed(r["stop_loss"]),
                "takeProfit": trimmed(r["take_profit"]),
                "entryFee": trimmed(r["entry_fee"]),
                "notional": trimmed(r["notional"]),
                "currentPrice": trimmed(price),
                "unrealizedPnl": trimmed(unrealized),
                "unrealizedPnlPct": pct,
            }
        )
    return {
        "positions": positions,
        "summary": {
            "openPositions": len(positions),
            "totalNotional": trimmed(total_notional),
            "totalUnrealizedPnl": trimmed(total_unrealized),
            "pricedPositions": sum(1 for p in positions if p["unrealizedPnl"] is not None),
            "unpricedSymbols": sorted(missing),
        },
        "asOf": as_of,
    }


def orders_summary(settings: Settings, user_id: int) -> dict[str, Any]:
    """The seed's orders summary: totals by state, traded volume and fees (zeros for no orders)."""
    with connect(settings) as con:
        rows = _rows(con, "SELECT * FROM order_history_summary WHERE user_id = ?", [user_id])
        as_of = _as_of(con, "order_history_summary")
    r = rows[0] if rows else {}
    return {
        "totalOrders": int(r.get("total_orders", 0)),
        "filledOrders": int(r.get("filled_orders", 0)),
        "pendingOrders": int(r.get("pending_orders", 0)),
        "cancelledOrders": int(r.get("cancelled_orders", 0)),
        "rejectedOrders": int(r.get("rejected_orders", 0)),
        "lostOrders": int(r.get("lost_orders", 0)),
        "totalVolume": trimmed(r.get("volume", ZERO)),
        "totalFees": trimmed(r.get("fees", ZERO)),
        "asOf": as_of,
    }


def pnl_summary(
    settings: Settings,
    user_id: int,
    period: str = "7d",
    *,
    prices: dict[str, Decimal] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The seed's P&L summary for `period` (1d, 7d, 30d, all) from daily_pnl and strategy_performance."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    start = _period_start(period, today)
    with connect(settings) as con:
        daily = _rows(
            con,
            "SELECT * FROM daily_pnl WHERE user_id = ? AND (? IS NULL OR day >= ?) AND day <= ? ORDER BY day",
            [user_id, start, start, today],
        )
        strategies = _rows(con, "SELECT * FROM strategy_performance WHERE user_id = ?", [user_id])
        as_of = _as_of(con, "daily_pnl")
    positions = positions_current(settings, user_id, prices)

    by_day: dict[date, dict[str, Any]] = defaultdict(
        lambda: {"pnl": ZERO, "trades": 0, "wins": 0, "losses": 0}
    )
    by_strategy: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"pnl": ZERO, "trades": 0, "wins": 0, "losses": 0}
    )
    gross_profit = gross_loss = fees = ZERO
    for r in daily:
        for bucket in (by_day[r["day"]], by_strategy[r["strategy_id"]]):
            bucket["pnl"] += r["realized_pnl"] or ZERO
            bucket["trades"] += r["trades"]
            bucket["wins"] += r["wins"]
            bucket["losses"] += r["losses"]
        gross_profit += r["gross_profit"]
        gross_loss += r["gross_loss"]
        fees += r["fees"] or ZERO
    realized = sum((b["pnl"] for b in by_day.values()), ZERO)
    trades = sum(b["trades"] for b in by_day.values())
    wins = sum(b["wins"] for b in by_day.values())
    losses = sum(b["losses"] for b in by_day.values())
    unrealized = positions["summary"]["totalUnrealizedPnl"]

    days = (
        sorted(by_day)
        if start is None
        else [start + timedelta(days=i) for i in range((today - start).days + 1)]
    )
    daily_pnl, running = [], ZERO
    for day in days:
        bucket = by_day.get(day, {"pnl": ZERO, "trades": 0, "wins": 0, "losses": 0})
        running += bucket["pnl"]
        daily_pnl.append(
            {"date": day.isoformat(), "pnl": trimmed(bucket["pnl"]), "trades": bucket["trades"],
             "wins": bucket["wins"], "losses": bucket["losses"], "cumulativePnl": trimmed(running)}
        )  # fmt: skip

    info = {s["strategy_id"]: s for s in strategies}
    performance = []
    for strategy_id in sorted(set(by_strategy) | {s for s, r in info.items() if r["is_active"]}):
        bucket, meta = (
            by_strategy.get(strategy_id, {"pnl": ZERO, "trades": 0, "wins": 0, "losses": 0}),
            info.get(strategy_id, {}),
        )
        performance.append(
            {
                "strategyId": strategy_id,
                "strategyCode": meta.get("strategy_code"),
                "strategyName": meta.get("strategy_name"),
                "pnl": trimmed(bucket["pnl"]),
                "trades": bucket["trades"],
                "wins": bucket["wins"],
                "losses": bucket["losses"],
                "winRate": _ratio(Decimal(bucket["wins"] * 100), Decimal(bucket["trades"]), 2) or 0.0,
                "isActive": bool(meta.get("is_active", False)),
            }
        )
    performance.sort(key=lambda p: (-p["pnl"], p["strategyId"]))
    return {
        "period": period,
        "from": start.isoformat() if start else None,
        "to": today.isoformat(),
        "asOf": as_of,
        "totalRealizedPnl": trimmed(realized),
        "totalUnrealizedPnl": unrealized,
        "totalPnl": trimmed(realized + unrealized),
        "totalTrades": trades,
        "winningTrades": wins,
        "losingTrades": losses,
        "winRate": _ratio(Decimal(wins * 100), Decimal(trades), 2) or 0.0,
        "activeStrategies": sum(1 for s in strategies if s["is_active"]),
        "averageWin": trimmed((gross_profit / wins).quantize(AVERAGE_QUANTUM)) if wins else trimmed(ZERO),
        "averageLoss": trimmed((gross_loss / losses).quantize(AVERAGE_QUANTUM)) if losses else trimmed(ZERO),
        "profitFactor": _ratio(gross_profit, -gross_loss, 4),
        "totalFees": trimmed(fees),
        "openPositions": positions["summary"]["openPositions"],
        "unpricedSymbols": positions["summary"]["unpricedSymbols"],
        "unrealizedPnlNote": (
            "unrealized P&L counts only priced positions; no price for "
            + ", ".join(positions["summary"]["unpricedSymbols"])
            if positions["summary"]["unpricedSymbols"]
            else None
        ),
        "dailyPnl": daily_pnl,
        "strategyPerformance": performance,
    }
