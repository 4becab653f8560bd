"""Every entity of both seeds, one schema for SQLite and Postgres.

Money and quantities are `Money` (exact Decimal), times are aware UTC, ids are BIGINT.
`updated_at` moves on every change so analytics can snapshot incrementally.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from xcoin_trading.store.lifecycle import OPEN_TRADE, PENDING
from xcoin_trading.store.types import BigId, JSONType, Money, UTCDateTime
from xcoin_trading.timeframes import utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _while(statuses: tuple[str, ...]) -> dict[str, Any]:
    """On Postgres a status index keeps only the rows still in play: the reconciler and the fan-out
    look those up every pass, while ended rows (almost all, in time) are read through other indexes,
    and a row that ends leaves the index (its answer's UPDATE writes one index entry fewer). SQLite
    keeps the whole index: its planner does not see that `status IN (a subset)` implies the predicate."""
    return {"postgresql_where": sa.text("status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")")}


def _unique_while_active(name: str, *columns: str) -> sa.Index:
    """A partial unique index over the active rows only (inactive ones are history)."""
    return sa.Index(
        name,
        *columns,
        unique=True,
        sqlite_where=sa.text("is_active = 1"),
        postgresql_where=sa.text("is_active"),
    )


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False, index=True
    )


class User(Timestamped, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True, nullable=False)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    oauth_provider: Mapped[str | None] = mapped_column(sa.String(32))
    oauth_id: Mapped[str | None] = mapped_column(sa.String(255))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True, nullable=False)

    __table_args__ = (sa.UniqueConstraint("oauth_provider", "oauth_id"),)


class Strategy(Timestamped, Base):
    __tablename__ = "strategies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    code: Mapped[str] = mapped_column(sa.String(100), unique=True, nullable=False)
    description: Mapped[str | None] = mapped_column(sa.Text)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), nullable=False, index=True)
    version: Mapped[str] = mapped_column(sa.String(32), default="1.0.0", nullable=False)
    source: Mapped[str | None] = mapped_column(sa.Text)  # user Python source
    builtin: Mapped[str | None] = mapped_column(sa.String(100))  # or the name of a built-in strategy
    symbol: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    resolution: Mapped[str] = mapped_column(sa.String(8), nullable=False)
    lookback: Mapped[int] = mapped_column(sa.Integer, default=200, nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list, nullable=False)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True, nullable=False)
    is_public: Mapped[bool] = mapped_column(sa.Boolean, default=False, nullable=False)
    subscriber_count: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    validation_status: Mapped[str] = mapped_column(sa.String(16), default="PENDING", nullable=False)
    validation_errors: Mapped[list[str] | None] = mapped_column(JSONType)
    validated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    git_repo: Mapped[str | None] = mapped_column(sa.String(500))
    git_branch: Mapped[str | None] = mapped_column(sa.String(200))
    git_commit: Mapped[str | None] = mapped_column(sa.String(64))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    author: Mapped[User] = relationship()

    __table_args__ = (
        sa.Index("ix_strategies_symbol_resolution_active", "symbol", "resolution", "is_active"),
        sa.CheckConstraint("subscriber_count >= 0", name="subscriber_count_non_negative"),
    )


class BrokerCredential(Timestamped, Base):
    __tablename__ = "broker_credentials"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), nullable=False, index=True)
    broker: Mapped[str] = mapped_column(sa.String(32), default="coindcx", nullable=False)
    # vault tokens `v1:<key id>:<nonce>:<ciphertext>`; never plaintext
    api_key_encrypted: Mapped[str] = mapped_column(sa.Text, nullable=False)
    api_secret_encrypted: Mapped[str] = mapped_column(sa.Text, nullable=False)
    key_id: Mapped[str] = mapped_column(sa.String(32), nullable=False)  # master key that encrypted them
    api_key_hint: Mapped[str] = mapped_column(sa.String(16), nullable=False)  # masked, for display
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True, nullable=False)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_tested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # One active key set per (user, broker): a new upload replaces it in one transaction.
        _unique_while_active("uq_broker_credentials_active_user_broker", "user_id", "broker"),
    )

    def __repr__(self) -> str:  # never show ciphertext either
        return f"BrokerCredential(id={self.id}, user_id={self.user_id}, broker={self.broker}, key={self.api_key_hint})"


class Subscription(Timestamped, Base):
    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), nullable=False, index=True)
    strategy_id: Mapped[int] = mapped_column(sa.ForeignKey("strategies.id"), nullable=False, index=True)
    broker_credential_id: Mapped[int | None] = mapped_column(sa.ForeignKey("broker_credentials.id"))
    capital: Mapped[Decimal] = mapped_column(Money, nullable=False)
    risk_per_trade: Mapped[Decimal] = mapped_column(Money, nullable=False)
    leverage: Mapped[Decimal] = mapped_column(Money, default=Decimal(1), nullable=False)
    max_positions: Mapped[int] = mapped_column(sa.Integer, default=1, nullable=False)
    max_daily_loss: Mapped[Decimal | None] = mapped_column(Money)
    sl_atr_multiplier: Mapped[Decimal | None] = mapped_column(Money)
    tp_atr_multiplier: Mapped[Decimal | None] = mapped_column(Money)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True, nullable=False)
    is_paused: Mapped[bool] = mapped_column(sa.Boolean, default=False, nullable=False)
    subscribed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    total_trades: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    winning_trades: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    losing_trades: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    total_pnl: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)

    strategy: Mapped[Strategy] = relationship()
    user: Mapped[User] = relationship()
    broker_credential: Mapped[BrokerCredential | None] = relationship()

    __table_args__ = (
        # One live subscription per (user, strategy); cancelled ones are history.
        _unique_while_active("uq_subscriptions_active_user_strategy", "user_id", "strategy_id"),
        sa.Index("ix_subscriptions_strategy_active_paused", "strategy_id", "is_active", "is_paused"),
    )


class StrategyExecution(Timestamped, Base):
    __tablename__ = "strategy_executions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    strategy_id: Mapped[int] = mapped_column(sa.ForeignKey("strategies.id"), nullable=False)
    interval_key: Mapped[str] = mapped_column(sa.String(40), nullable=False)
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # RUNNING / COMPLETED / FAILED / SKIPPED / NO_SIGNAL
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    signal: Mapped[str | None] = mapped_column(sa.String(8))  # LONG / SHORT / EXIT / HOLD
    signal_price: Mapped[Decimal | None] = mapped_column(Money)
    signal_stop_loss: Mapped[Decimal | None] = mapped_column(Money)
    signal_take_profit: Mapped[Decimal | None] = mapped_column(Money)
    subscribers_count: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    trades_created: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    duration_ms: Mapped[int | None] = mapped_column(sa.Integer)
    worker_id: Mapped[str | None] = mapped_column(sa.String(200))
    dagster_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # per-subscriber outcomes

    strategy: Mapped[Strategy] = relationship()

    __table_args__ = (
        # The exactly-once guarantee: one execution per strategy and candle close.
        sa.UniqueConstraint("strategy_id", "interval_key"),
        sa.Index("ix_strategy_executions_status_scheduled", "status", "scheduled_at"),
    )


class ExecutionShard(Timestamped, Base):
    """One shard of an execution's fan-out (XCOIN_FANOUT_SHARDS > 1): the subscriptions of the users
    with `user_id % shards == shard`. The row is the shard's claim (exactly once per shard, like the
    execution row per candle); the execution is COMPLETED once all `shards` rows are."""

    __tablename__ = "execution_shards"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    execution_id: Mapped[int] = mapped_column(sa.ForeignKey("strategy_executions.id"), nullable=False)
    shard: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    shards: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)  # RUNNING / COMPLETED / FAILED
    worker_id: Mapped[str | None] = mapped_column(sa.String(200))
    dagster_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    subscribers_count: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    error: Mapped[str | None] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # outcomes + timings of the shard

    __table_args__ = (sa.UniqueConstraint("execution_id", "shard"),)


class Trade(Timestamped, Base):
    __tablename__ = "trades"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriptions.id"), nullable=False, index=True
    )
    # Not indexed alone: the (strategy_id, status) and (user_id, exit_time) indexes lead with them.
    strategy_id: Mapped[int] = mapped_column(sa.ForeignKey("strategies.id"), nullable=False)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), nullable=False)
    execution_id: Mapped[int | None] = mapped_column(sa.ForeignKey("strategy_executions.id"))
    symbol: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    market_type: Mapped[str] = mapped_column(sa.String(8), default="spot", nullable=False)
    side: Mapped[str] = mapped_column(sa.String(5), nullable=False)  # LONG / SHORT
    quantity: Mapped[Decimal] = mapped_column(Money, nullable=False)
    leverage: Mapped[Decimal] = mapped_column(Money, default=Decimal(1), nullable=False)
    entry_price: Mapped[Decimal | None] = mapped_column(Money)  # actual average fill price
    exit_price: Mapped[Decimal | None] = mapped_column(Money)
    stop_loss: Mapped[Decimal | None] = mapped_column(Money)
    take_profit: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[str] = mapped_column(sa.String(16), default="OPEN", nullable=False)  # PENDING/OPEN/CLOSED
    pnl: Mapped[Decimal | None] = mapped_column(Money)
    pnl_pct: Mapped[Decimal | None] = mapped_column(Money)
    entry_fee: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    exit_fee: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    fees: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    entry_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_type: Mapped[str | None] = mapped_column(
        sa.String(16)
    )  # TAKE_PROFIT/STOP_LOSS/SIGNAL/LIQUIDATION/MANUAL
    flags: Mapped[list[str]] = mapped_column(JSONType, default=list, nullable=False)

    __table_args__ = (
        sa.Index("ix_trades_status_symbol", "status", "symbol", **_while(OPEN_TRADE)),
        sa.Index("ix_trades_user_exit_time", "user_id", "exit_time"),
        sa.Index("ix_trades_strategy_status", "strategy_id", "status"),
    )


class Order(Timestamped, Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    execution_id: Mapped[int | None] = mapped_column(sa.ForeignKey("strategy_executions.id"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    trade_id: Mapped[int | None] = mapped_column(sa.ForeignKey("trades.id"), index=True)
    leg: Mapped[str] = mapped_column(sa.String(12), nullable=False)  # ENTRY / STOP_LOSS / TAKE_PROFIT / EXIT
    # Deterministic from (execution, subscription, leg), written BEFORE the request is sent.
    client_order_id: Mapped[str] = mapped_column(sa.String(36), unique=True, nullable=False)
    exchange_order_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    market: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    side: Mapped[str] = mapped_column(sa.String(4), nullable=False)  # buy / sell
    order_type: Mapped[str] = mapped_column(sa.String(24), nullable=False)
    price: Mapped[Decimal | None] = mapped_column(Money)
    stop_price: Mapped[Decimal | None] = mapped_column(Money)
    quantity: Mapped[Decimal] = mapped_column(Money, nullable=False)
    filled_quantity: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    avg_price: Mapped[Decimal | None] = mapped_column(Money)
    fee: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    # INTENT (recorded, never sent) / SENDING (recorded, may have been sent: asked for by client id
    # before any resend) / OPEN / PARTIALLY_FILLED / FILLED / CANCELLED /
    # REJECTED / UNKNOWN / LOST / EXTERNAL
    status: Mapped[str] = mapped_column(sa.String(20), default="INTENT", nullable=False)
    raw_last_response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    # Reconciler passes in which the exchange said it has no such order (LOST after a few).
    lookup_misses: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0", nullable=False)

    __table_args__ = (sa.Index("ix_orders_status_market", "status", "market", **_while(PENDING)),)


class BacktestResult(Timestamped, Base):
    __tablename__ = "backtest_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    strategy_id: Mapped[int | None] = mapped_column(sa.ForeignKey("strategies.id"), index=True)
    strategy_code: Mapped[str] = mapped_column(sa.String(100), nullable=False, index=True)
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    execution_time_ms: Mapped[int] = mapped_column(sa.Integer, nullable=False)
