"""What a trading desk (spot, futures) needs from the exchange it trades on.

The desks depend on this protocol, not on the engine, so the engine can own its desks without the
two importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Protocol

from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.simulator.accounts import SimError


@dataclass
class SimConfig:
    spot_fee_rate: Decimal = Decimal("0.001")  # 0.1 % of notional per fill
    futures_fee_rate: Decimal = Decimal("0.0005")
    slippage: Decimal = Decimal(0)  # market orders: price × (1 ± slippage); 0 for backtest parity
    liquidity_fraction: Decimal | None = None  # resting order fills ≤ this share of a candle's volume
    recv_window_ms: int = 10_000  # |request timestamp − wall clock| allowed
    max_open_orders: int = 25  # per account and market (DOCS)
    maintenance_margin_rate: Decimal = Decimal("0.005")
    rate_limits: bool = True  # published limits; off (or scaled) for benchmarks
    rate_limit_scale: float = 1.0
    stop_loss_first: bool = True  # a candle touching both TP and SL fills the SL (backtest default)

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise SimError(422, f"Invalid Request: unknown config field {key!r}")
            current = getattr(self, key)
            if isinstance(current, Decimal) or key == "liquidity_fraction":
                value = None if value is None else Decimal(str(value))
            elif isinstance(current, bool):
                value = bool(value)
            elif isinstance(current, int):
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
            setattr(self, key, value)

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: (str(v) if isinstance(v := getattr(self, f.name), Decimal) else v) for f in fields(self)
        }


class Clock(Protocol):
    def now(self) -> int: ...


class Venue(Protocol):
    """The engine as its desks see it: configuration, listed markets, the clock and prices."""

    @property
    def config(self) -> SimConfig: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def spot_markets(self) -> dict[str, Market]: ...

    @property
    def futures_markets(self) -> dict[str, Market]: ...

    def now(self) -> int:
        """Simulator time in ms, after processing every candle that closed before it."""
        ...

    def price(self, market: Market) -> Decimal: ...
