"""What a live worker needs for its runs: settings, exchange URLs, locks, the registry, the vault."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from xcoin_trading.config import Settings, get_settings
from xcoin_trading.exchange.client import CoinDCXClient
from xcoin_trading.exchange.markets import Market
from xcoin_trading.live.balances import ReadAhead
from xcoin_trading.live.locks import Locks, make_locks, worker_identity
from xcoin_trading.live.registry import Registry, make_registry, store_namespace
from xcoin_trading.strategy.sandbox import SandboxLimits
from xcoin_trading.vault import Vault


@dataclass
class LiveContext:
    settings: Settings
    api_url: str
    public_url: str
    locks: Locks
    registry: Registry
    vault: Vault
    worker_id: str = field(default_factory=worker_identity)
    staleness_fraction: float = 1 / 3  # of the candle: later than this after the close, skip
    fee_rate: Decimal = Decimal("0.001")  # sizing keeps margin + entry fee within capital
    concurrency: int = 200
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    strategy_pool: int = 8  # strategies of one candle run at once: a slow one delays none of the others
    namespace: str = "default"  # store_namespace(settings): prefixes lock keys
    dagster_run_id: str | None = None  # recorded on the rows this run claims (run-failure sensor)
    balances_ahead: ReadAhead = field(default_factory=ReadAhead)  # read before the close (balances.py)


def live_context(settings: Settings | None = None, **overrides: Any) -> LiveContext:
    settings = settings or get_settings()
    from xcoin_trading.exchange.embedded import exchange_urls

    api, public = exchange_urls(settings)
    ns = store_namespace(settings)
    return LiveContext(
        settings=settings, api_url=api, public_url=public, locks=make_locks(settings.redis_url),
        registry=make_registry(settings.redis_url, ns), vault=Vault.from_settings(settings), namespace=ns,
        **{"concurrency": settings.fanout_concurrency, **overrides},
    )  # fmt: skip


def market_of(ctx: LiveContext, symbol: str) -> Market:
    """The market's rules (precision, step, minimums) as the exchange serves them now."""
    if "-" in symbol:  # futures pair: instrument metadata is served per pair
        from xcoin_trading.exchange.catalog import default_market

        return default_market(symbol)
    with CoinDCXClient(ctx.api_url, ctx.public_url) as client:
        return client.market(symbol)
