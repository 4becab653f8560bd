"""ORM rows → response models. Money leaves as plain decimal strings (no exponent, no float)."""

from __future__ import annotations

from xcoin_trading.api.schemas.auth import UserOut
from xcoin_trading.api.schemas.backtests import BacktestOut
from xcoin_trading.api.schemas.broker import BrokerKeyOut
from xcoin_trading.api.schemas.strategies import StrategyOut
from xcoin_trading.api.schemas.subscriptions import SubscriptionOut
from xcoin_trading.money import plain
from xcoin_trading.store import models as m


def user(u: m.User) -> UserOut:
    return UserOut(
        id=u.id, email=u.email, name=u.name, oauth_provider=u.oauth_provider, created_at=u.created_at
    )


def broker_key(c: m.BrokerCredential) -> BrokerKeyOut:
    return BrokerKeyOut(
        id=c.id,
        broker=c.broker,
        api_key=c.api_key_hint,
        is_active=c.is_active,
        connected_at=c.connected_at,
        last_tested_at=c.last_tested_at,
    )


def strategy(st: m.Strategy, viewer_id: int) -> StrategyOut:
    owner = st.author_id == viewer_id
    return StrategyOut(
        id=st.id,
        name=st.name,
        code=st.code,
        description=st.description,
        author_id=st.author_id,
        is_owner=owner,
        version=st.version,
        symbol=st.symbol,
        resolution=st.resolution,
        lookback=st.lookback,
        builtin=st.builtin,
        source=st.source if owner else None,  # user code is the author's property
        params=st.params or {},
        tags=st.tags or [],
        is_active=st.is_active,
        is_public=st.is_public,
        subscriber_count=st.subscriber_count,
        validation_status=st.validation_status,
        validation_errors=st.validation_errors,
        validated_at=st.validated_at,
        created_at=st.created_at,
        updated_at=st.updated_at,
    )


def subscription(sub: m.Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=sub.id,
        strategy_id=sub.strategy_id,
        strategy_name=sub.strategy.name,
        strategy_code=sub.strategy.code,
        broker_credential_id=sub.broker_credential_id,
        capital=plain(sub.capital),
        risk_per_trade=plain(sub.risk_per_trade),
        leverage=plain(sub.leverage),
        max_positions=sub.max_positions,
        max_daily_loss=plain(sub.max_daily_loss),
        sl_atr_multiplier=plain(sub.sl_atr_multiplier),
        tp_atr_multiplier=plain(sub.tp_atr_multiplier),
        is_active=sub.is_active,
        is_paused=sub.is_paused,
        subscribed_at=sub.subscribed_at,
        paused_at=sub.paused_at,
        unsubscribed_at=sub.unsubscribed_at,
        total_trades=sub.total_trades,
        winning_trades=sub.winning_trades,
        losing_trades=sub.losing_trades,
        total_pnl=plain(sub.total_pnl),
    )


def backtest(b: m.BacktestResult) -> BacktestOut:
    return BacktestOut(
        id=b.id,
        strategy_id=b.strategy_id,
        strategy_code=b.strategy_code,
        config=b.config,
        metrics=b.metrics,
        execution_time_ms=b.execution_time_ms,
        created_at=b.created_at,
    )
