"""`xcoin demo`: the whole platform on the embedded default, end to end, with a short report.

Each capability adds a step (a module of this package). Re-running the demo reuses what an earlier
run created.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from xcoin_trading.config import Settings, get_settings
from xcoin_trading.demo.accounts import DEMO_STRATEGIES, DEMO_USERS, DemoState, setup_accounts
from xcoin_trading.demo.backtest import run_demo_backtest
from xcoin_trading.demo.exchange import show_exchange_balances
from xcoin_trading.demo.live import run_demo_live
from xcoin_trading.demo.marketdata import ingest_demo_candles
from xcoin_trading.store.db import session_scope, upgrade
from xcoin_trading.store.models import BrokerCredential, Strategy, Subscription, User
from xcoin_trading.vault import Vault

Echo = Callable[[str], None]


def report_store(state: DemoState, echo: Echo) -> None:
    s = state.settings
    with session_scope(s) as session:
        counts = {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (User, Strategy, BrokerCredential, Subscription)
        }
        echo("")
        echo("Subscriptions (capital / risk per trade / leverage):")
        rows = session.execute(
            select(
                User.email,
                Strategy.code,
                Subscription.capital,
                Subscription.risk_per_trade,
                Subscription.leverage,
            )
            .join(User, User.id == Subscription.user_id)
            .join(Strategy, Strategy.id == Subscription.strategy_id)
            .where(Subscription.is_active.is_(True))
            .order_by(Subscription.id)
        ).all()
        for email, code, capital, risk, leverage in rows:
            echo(f"  {email:<20} {code:<18} {capital:>10} USDT  {risk * 100:>5}%  x{leverage}")
        hints = session.scalars(
            select(BrokerCredential.api_key_hint).where(BrokerCredential.is_active.is_(True))
        ).all()
    echo("")
    echo("Store: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    echo(f"Broker keys are AES-256-GCM encrypted; shown masked only: {', '.join(hints)}")


def report_analytics(state: DemoState, echo: Echo) -> None:
    """Snapshots → dbt_like_sql models in DuckDB, then the P&L summary and one SQL query."""
    from xcoin_trading.analytics import build_all
    from xcoin_trading.analytics.pnl import pnl_summary
    from xcoin_trading.analytics.queries import run_query

    summary = build_all(state.settings)
    echo("")
    echo(f"Analytics: {summary.describe()}")
    alice = state.user_ids[DEMO_USERS[0].email]
    pnl = pnl_summary(state.settings, alice, "all")
    echo(f"  P&L summary for {DEMO_USERS[0].email} (xcoin pnl --user {DEMO_USERS[0].email} --period all):")
    for key in ("totalRealizedPnl", "totalUnrealizedPnl", "totalPnl", "totalTrades", "winRate", "activeStrategies",
                "averageWin", "profitFactor"):  # fmt: skip
        echo(f"    {key:<20} {pnl.get(key)}")
    sql = (
        "SELECT strategy_code, sum(trades) AS trades, sum(wins) AS wins, sum(realized_pnl) AS realized_pnl "
        "FROM strategy_performance GROUP BY strategy_code ORDER BY realized_pnl DESC"
    )
    try:
        result = run_query(state.settings, sql)
    except Exception as exc:  # noqa: BLE001 - the demo reports, it does not hide
        echo(f"  xcoin sql: {exc}")
        return
    echo(f'  xcoin sql "{sql}"')
    echo("    " + " | ".join(result.columns))
    for record in result.records():
        echo("    " + " | ".join(str(v) for v in record.values()))


def run_demo(echo: Echo = print, settings: Settings | None = None) -> DemoState:
    settings = settings or get_settings()
    settings.ensure_dirs()
    echo(f"xcoin demo — embedded default under {settings.home}")
    upgrade(settings)
    vault = Vault.from_settings(settings)
    state = DemoState(settings)
    setup_accounts(state, vault)
    echo(
        "Created this run: " + (", ".join(state.created) if state.created else "nothing (reused earlier run)")
    )
    report_store(state, echo)
    show_exchange_balances(state, vault, echo)
    ingest_demo_candles(settings, echo, [str(s["symbol"]) for s in DEMO_STRATEGIES])
    run_demo_backtest(settings, echo)
    run_demo_live(state, vault, echo)
    report_analytics(state, echo)
    echo("")
    echo("Where things live:")
    echo(f"  store (SQLite)     {settings.database_url}")
    echo(f"  master key         {settings.master_key_path} (mode 0600)")
    echo(f"  candle lake        {settings.lake_dir}")
    echo(f"  DuckDB warehouse   {settings.warehouse_path}")
    echo(f"  Dagster home       {settings.dagster_home}")
    echo(f"  Dagster UI         make dev XCOIN_HOME={settings.home}   (then http://127.0.0.1:3000)")
    return state
