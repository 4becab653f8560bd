"""ORM rows → response models. Money leaves as plain decimal strings (no exponent, no float)."""

from __future__ import annotations

from typing import Any

from xcoin_trading.api.schemas.auth import UserOut
from xcoin_trading.api.schemas.backtests import BacktestOut
from xcoin_trading.api.schemas.broker import BrokerKeyOut
from xcoin_trading.api.schemas.strategies import StrategyOut
from xcoin_trading.api.schemas.subscriptions import SubscriptionOut
from xcoin_trading.money import plain
from xcoin_trading.store import models as m


def same_named(row: object, *names: str) -> dict[str, Any]:
    """Response fields that copy the stored attribute of the same name, unchanged."""
    return {name: getattr(row, name) for name in names}


def user(u: m.User) -> UserOut:
    return UserOut(
        id=u.id, email=u.email, name=u.name, oauth_provider=u.oauth_provider, created_at=u.created_at
    )


def broker_key(c: m.BrokerCredential) -> BrokerKeyOut:
    return BrokerKeyOut(
        api_key=c.api_key_hint, **same_named(c, "id", "broker", "is_active", "connected_at", "last_tested_at")
    )


def strategy(st: m.Strategy, viewer_id: int) -> StrategyOut:
    owner = st.author_id == viewer_id
    return StrategyOut(
        is_owner=owner,
        source=st.source if owner else None,  # user code is the author's property
        params=st.params or {},
        tags=st.tags or [],
        **same_named(st, "id", "name", "code", "description", "author_id", "version", "symbol", "resolution"),
        **same_named(st, "lookback", "builtin", "is_active", "is_public", "subscriber_count"),
        **same_named(
            st, "validation_status", "validation_errors", "validated_at", "created_at", "updated_at"
        ),
    )


def subscription(sub: m.Subscription) -> SubscriptionOut:
    # Validated from one mapping: its values are of many types, each checked by the schema.
    return SubscriptionOut.model_validate(
        {
            "strategy_name": sub.strategy.name,
            "strategy_code": sub.strategy.code,
            **same_named(
                sub, "id", "strategy_id", "broker_credential_id", "max_positions", "is_active", "is_paused"
            ),
            **same_named(sub, "subscribed_at", "paused_at", "unsubscribed_at"),
            **same_named(sub, "total_trades", "winning_trades", "losing_trades"),
            **{name: plain(getattr(sub, name)) for name in _SUBSCRIPTION_AMOUNTS},
        }
    )


_SUBSCRIPTION_AMOUNTS = (
    "capital", "risk_per_trade", "leverage", "max_daily_loss", "sl_atr_multiplier", "tp_atr_multiplier", "total_pnl"
)  # fmt: skip


def backtest(b: m.BacktestResult) -> BacktestOut:
    return BacktestOut(
        **same_named(
            b, "id", "strategy_id", "strategy_code", "config", "metrics", "execution_time_ms", "created_at"
        )
    )
