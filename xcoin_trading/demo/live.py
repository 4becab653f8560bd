"""Demo step: live trading over a replayed window of real BTC candles.

A simulator replays `../shared/data/BTCUSDT-1m-2024-01.parquet` (a seeded walk elsewhere); every
minute each strategy whose candle closed runs once and fans out, and the reconciler runs. At the
end each subscriber's closed trades are printed beside their exchange account's ledger change.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from xcoin_trading.timeframes import floor_ms, resolution_ms

REPLAY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "BTCUSDT-1m-2024-01.parquet"
DEMO_MINUTES = 240


def _simulator():
    from xcoin_trading.exchange.simulator import SimulatorServer

    if REPLAY.exists():
        return SimulatorServer.from_replay(REPLAY, "BTCUSDT").start(), f"replay of {REPLAY.name}"
    return SimulatorServer.random_walk(seed=42).start(), "seeded random walk (../shared/data not found)"


def run_demo_live(state: Any, vault: Any, echo: Callable[[str], None]) -> dict[str, Any]:
    from xcoin_trading.demo.accounts import open_demo_accounts
    from xcoin_trading.exchange.simulator import SimulatorAdmin
    from xcoin_trading.live.coordinator import live_context, run_candle_close
    from xcoin_trading.live.flatten import flatten
    from xcoin_trading.live.reconcile import WATCHED, reconcile_once
    from xcoin_trading.live.registry import StrategySettings
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order, Strategy, Subscription, Trade, User

    sim, source = _simulator()
    try:
        admin = SimulatorAdmin(sim.url)
        keys = {email: creds.api_key for email, creds in open_demo_accounts(state, vault, admin).items()}
        with session_scope(state.settings) as session:
            # Reruns of the demo start a fresh exchange: earlier demo trades belong to another one.
            session.execute(
                sa.update(Trade).where(Trade.status.in_(("OPEN", "PENDING"))).values(status="ABANDONED")
            )
            session.execute(sa.update(Order).where(Order.status.in_(WATCHED)).values(status="ABANDONED"))
            candles = sorted(
                {
                    (s.symbol, s.resolution)
                    for s in session.scalars(sa.select(Strategy).where(Strategy.is_active))
                }
            )
        start_balance = {email: _usdt(admin, key) for email, key in keys.items()}
        ctx = live_context(dataclasses.replace(state.settings, api_url=sim.url, public_url=sim.url))
        t0 = admin.now_ms()
        echo("")
        echo(f"Live: {DEMO_MINUTES} replayed minutes on the simulator ({source}), "
             f"from {datetime.fromtimestamp(t0 / 1000, UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
        counts: dict[str, int] = defaultdict(int)
        entries: dict[str, int] = defaultdict(int)  # subscriber outcomes of every candle
        why: dict[str, int] = defaultdict(int)
        first_trade: int | None = None
        with session_scope(state.settings) as session:
            first_trade = (session.scalar(sa.select(sa.func.max(Trade.id))) or 0) + 1
        for minute in range(1, DEMO_MINUTES + 1):
            now_ms = t0 + minute * 60_000
            admin.advance(to_ms=now_ms)
            now = datetime.fromtimestamp(now_ms / 1000, UTC)
            for symbol, resolution in candles:
                if floor_ms(now_ms, resolution) == now_ms and now_ms - t0 >= resolution_ms(resolution):
                    for report in run_candle_close(
                        ctx, symbol, resolution, now, now=now + timedelta(seconds=1)
                    ):
                        counts[report.status] += 1
                        for outcome in report.outcomes.values():
                            entries[outcome["status"]] += 1
                            if "balance" in outcome:
                                entries["sized down to the free balance"] += 1
                            if outcome["status"] in ("REFUSED", "FAILED", "UNKNOWN"):
                                why[f"{outcome['status']}: {outcome.get('reason', '?')[:70]}"] += 1
            reconcile_once(ctx, now=now)
        end = datetime.fromtimestamp((t0 + DEMO_MINUTES * 60_000) / 1000, UTC)
        # End of the window: flatten every strategy so each ledger can be compared in full.
        with session_scope(state.settings) as session:
            demo_strategies = [
                StrategySettings.from_row(s)
                for s in session.scalars(sa.select(Strategy).where(Strategy.is_active))
            ]
        for strategy in demo_strategies:
            flatten(ctx, strategy, end + timedelta(seconds=1))
        echo(f"  executions: {dict(sorted(counts.items()))}")
        # Every subscriber outcome, each refusal with its reason (nothing hidden behind a total).
        echo(f"  subscriber outcomes: {dict(sorted(entries.items()))}")
        for reason, n in sorted(why.items()):
            echo(f"    {n} × {reason}")
        with session_scope(state.settings) as session:
            rows = session.execute(
                sa.select(User.email, Strategy.code, Trade)
                .join(Subscription, Subscription.id == Trade.subscription_id)
                .join(User, User.id == Subscription.user_id)
                .join(Strategy, Strategy.id == Trade.strategy_id)
                .where(Trade.id >= first_trade)
                .order_by(Trade.id)
            ).all()
        closed: dict[str, Decimal] = defaultdict(Decimal)
        open_count: dict[str, int] = defaultdict(int)
        echo("  closed trades (entry → exit, P&L after both fees, as the exchange reported them):")
        shown = 0
        for email, code, trade in rows:
            if trade.status == "CLOSED":
                if trade.pnl is None:  # close_trade always sets it
                    raise ValueError(f"trade {trade.id} is CLOSED without a P&L")
                closed[email] += trade.pnl
                if shown < 12:
                    echo(f"    #{trade.id:<4} {email:<18} {code:<16} {trade.side:<5} {trade.quantity:>10} "
                         f"{trade.entry_price:>10} → {trade.exit_price:<10} {trade.exit_type:<11} {trade.pnl:>+12.4f}")  # fmt: skip
                    shown += 1
            elif trade.status in ("OPEN", "PENDING"):
                open_count[email] += 1
        echo("  at the end of the window every strategy was flattened (xcoin live flatten --strategy CODE)")
        hidden = sum(1 for *_, t in rows if t.status == "CLOSED") - shown
        if hidden > 0:
            echo(f'    ... and {hidden} more (xcoin sql "SELECT * FROM trades" after the analytics build)')
        echo("  per account: Σ realised P&L of closed trades vs the exchange ledger's USDT change")
        for email, key in keys.items():
            change = _usdt(admin, key) - start_balance[email]
            note = (
                f"  ({open_count[email]} position(s) still open hold the difference)"
                if open_count[email]
                else ""
            )
            echo(f"    {email:<20} trades {closed[email]:>+12.4f}  ledger {change:>+12.4f}{note}")
        return {"until": end, "executions": dict(counts)}
    finally:
        sim.stop()


def _usdt(admin: Any, api_key: str) -> Decimal:
    usdt = admin.balances(api_key).get("USDT", {})
    return Decimal(usdt.get("balance", "0")) + Decimal(usdt.get("locked_balance", "0"))
