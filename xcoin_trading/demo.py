"""`xcoin demo`: the whole platform on the embedded default, end to end, with a short report.

Each capability adds a step here. Re-running the demo reuses what an earlier run created.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select

from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import NotFound
from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.services import credentials, strategies, subscriptions, users
from xcoin_trading.store.db import session_scope, upgrade
from xcoin_trading.store.models import BrokerCredential, Strategy, Subscription, User
from xcoin_trading.vault import Vault

Echo = Callable[[str], None]
DEMO_PASSWORD = "demo-password-123"


@dataclass(frozen=True)
class DemoUser:
    email: str
    name: str
    capital: Decimal
    risk: Decimal
    leverage: Decimal


DEMO_USERS = (
    DemoUser("alice@demo.xcoin", "Alice", Decimal("10000"), Decimal("0.01"), Decimal("1")),
    DemoUser("bob@demo.xcoin", "Bob", Decimal("25000"), Decimal("0.02"), Decimal("2")),
    DemoUser("carol@demo.xcoin", "Carol", Decimal("5000"), Decimal("0.005"), Decimal("3")),
)
DEMO_STRATEGIES = (
    dict(
        code="demo-btc-sma-1m", name="BTC SMA crossover 1m", builtin="sma_crossover",
        symbol="BTCUSDT", resolution="1m", params={"fast": 20, "slow": 50, "sl_pct": 0.02, "tp_pct": 0.04},
        lookback=120, tags=["demo", "trend"], is_public=True,
    ),
    dict(
        code="demo-eth-atr-5m", name="ETH ATR trend 5m (futures)", builtin="atr_trend",
        symbol="B-ETH_USDT", resolution="5m", params={"atr_period": 14, "sl_atr": 2.0, "tp_atr": 3.0},
        lookback=200, tags=["demo", "futures"], is_public=True,
    ),
)  # fmt: skip


@dataclass
class DemoState:
    settings: Settings
    user_ids: dict[str, int] = field(default_factory=dict)
    strategy_ids: dict[str, int] = field(default_factory=dict)
    subscription_ids: list[int] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def _ensure_user(session, demo: DemoUser, state: DemoState) -> User:
    try:
        return users.get_user_by_email(session, demo.email)
    except NotFound:
        state.created.append(f"user {demo.email}")
        return users.register_user(session, demo.email, DEMO_PASSWORD, demo.name)


def setup_accounts(state: DemoState, vault: Vault) -> None:
    """Users, encrypted broker keys, strategies and subscriptions (issue: foundation)."""
    with session_scope(state.settings) as session:
        for demo in DEMO_USERS:
            user = _ensure_user(session, demo, state)
            state.user_ids[demo.email] = user.id
            has_keys = session.scalar(
                select(BrokerCredential.id).where(
                    BrokerCredential.user_id == user.id, BrokerCredential.is_active.is_(True)
                )
            )
            if has_keys is None:
                api_key = f"demo-{demo.name.lower()}-{secrets.token_hex(8)}"
                credentials.add_credential(session, vault, user.id, api_key, secrets.token_hex(32))
                state.created.append(f"encrypted keys for {demo.email}")
        author = state.user_ids[DEMO_USERS[0].email]
        for spec in DEMO_STRATEGIES:
            try:
                strategy = strategies.get_by_code(session, spec["code"])
            except NotFound:
                strategy = strategies.record_validation(strategies.create_strategy(session, author, **spec))
                state.created.append(f"strategy {spec['code']}")
            state.strategy_ids[spec["code"]] = strategy.id
        for demo in DEMO_USERS:
            uid = state.user_ids[demo.email]
            for code, sid in state.strategy_ids.items():
                existing = session.scalar(
                    select(Subscription.id).where(
                        Subscription.user_id == uid,
                        Subscription.strategy_id == sid,
                        Subscription.is_active.is_(True),
                    )
                )
                if existing is None:
                    sub = subscriptions.subscribe(
                        session,
                        uid,
                        sid,
                        capital=demo.capital,
                        risk_per_trade=demo.risk,
                        leverage=demo.leverage,
                    )
                    existing = sub.id
                    state.created.append(f"subscription {demo.email} -> {code}")
                state.subscription_ids.append(existing)


def open_demo_accounts(state: DemoState, vault: Vault, admin) -> dict[str, Credentials]:
    """Each demo user's account on `admin`'s simulator, opened with their decrypted keys and funded
    with their capital in USDT; the credentials by email."""
    accounts: dict[str, Credentials] = {}
    with session_scope(state.settings) as session:
        for demo in DEMO_USERS:
            keys = credentials.decrypt(
                vault, credentials.active_credential(session, state.user_ids[demo.email])
            )
            creds = Credentials(keys.api_key.reveal(), keys.api_secret.reveal())
            admin.add_account(creds.api_key, creds.api_secret, {"USDT": str(demo.capital)})
            accounts[demo.email] = creds
    return accounts


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
    from xcoin_trading.exchange.demo import show_exchange_balances

    show_exchange_balances(state, vault, echo)
    from xcoin_trading.marketdata.demo import ingest_demo_candles

    ingest_demo_candles(settings, echo, [str(s["symbol"]) for s in DEMO_STRATEGIES])
    from xcoin_trading.backtest.demo import run_demo_backtest

    run_demo_backtest(settings, echo)
    from xcoin_trading.live.demo import run_demo_live

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
