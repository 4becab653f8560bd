"""Demo users, their encrypted keys, the demo strategies and subscriptions; their simulator accounts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from xcoin_trading.config import Settings
from xcoin_trading.errors import NotFound
from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.services import credentials, strategies, subscriptions, users
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import BrokerCredential, Subscription, User
from xcoin_trading.vault import Vault

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
DEMO_STRATEGIES: tuple[dict[str, Any], ...] = (
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
