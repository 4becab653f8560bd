"""Market metadata (`symbol` vs `pair`, precisions, step, minimums) and exact rounding.

CoinDCX names: `symbol` is `BTCUSDT`; `pair` is `B-BTC_USDT` (look it up, never build it).
`target` is the traded coin (quantity), `base` the price currency (CoinDCX's inverted terms).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from xcoin_trading.errors import ValidationError

MarketKind = Literal["spot", "futures"]


def D(value: Any) -> Decimal:
    """Exact decimal from a JSON number or string (floats go through str, never binary)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


class BelowMinimum(ValidationError):
    """An order smaller than the market allows; names which minimum."""


@dataclass(frozen=True)
class Market:
    symbol: str  # BTCUSDT
    pair: str  # B-BTC_USDT
    target: str  # BTC (quantity currency)
    base: str  # USDT (price currency)
    price_precision: int  # base_currency_precision: decimals in the price
    quantity_precision: int  # target_currency_precision: decimals in the quantity
    step: Decimal  # smallest quantity increment
    min_quantity: Decimal
    max_quantity: Decimal
    min_notional: Decimal
    kind: MarketKind = "spot"
    max_leverage: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    price_increment: Decimal | None = None  # futures tick size; spot uses price_precision
    status: str = "active"

    @property
    def tick(self) -> Decimal:
        return self.price_increment or Decimal(1).scaleb(-self.price_precision)

    @property
    def effective_min_quantity(self) -> Decimal:
        # CoinDCX FAQ: max(min_quantity, 10**-target_currency_precision)
        return max(self.min_quantity, Decimal(1).scaleb(-self.quantity_precision))

    def round_quantity(self, quantity: Decimal) -> Decimal:
        """Down to the step and the quantity precision: never order more than was sized."""
        q = D(quantity)
        if q <= 0:
            return Decimal(0)
        stepped = (q / self.step).to_integral_value(rounding=ROUND_DOWN) * self.step
        return stepped.quantize(Decimal(1).scaleb(-self.quantity_precision), rounding=ROUND_DOWN)

    def round_price(self, price: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        p = D(price)
        ticks = (p / self.tick).to_integral_value(rounding=rounding)
        return (ticks * self.tick).quantize(self.tick)

    def check_order(self, quantity: Decimal, price: Decimal) -> None:
        """Refuse an order the exchange would refuse, with the reason and the numbers."""
        q, p = D(quantity), D(price)
        if q < self.effective_min_quantity:
            raise BelowMinimum(
                "quantity",
                f"{q} is below the minimum {self.effective_min_quantity} {self.target} for {self.symbol}",
            )
        if q > self.max_quantity:
            raise ValidationError(
                "quantity", f"{q} is above the maximum {self.max_quantity} for {self.symbol}"
            )
        notional = q * p
        if notional < self.min_notional:
            raise BelowMinimum(
                "notional",
                f"{notional.normalize():f} {self.base} is below the minimum order value "
                f"{self.min_notional} {self.base} for {self.symbol}",
            )

    @classmethod
    def from_details(cls, row: dict[str, Any]) -> Market:
        """Build from one `markets_details` object (numbers may be strings)."""

        def opt(key: str) -> Decimal | None:
            v = row.get(key)
            return None if v is None else D(v)

        return cls(
            symbol=row.get("coindcx_name") or row["symbol"],
            pair=row["pair"],
            target=row["target_currency_short_name"],
            base=row["base_currency_short_name"],
            price_precision=int(row["base_currency_precision"]),
            quantity_precision=int(row["target_currency_precision"]),
            step=D(row.get("step") or Decimal(1).scaleb(-int(row["target_currency_precision"]))),
            min_quantity=D(row["min_quantity"]),
            max_quantity=D(row["max_quantity"]),
            min_notional=D(row.get("min_notional") or 0),
            kind="spot",
            max_leverage=opt("max_leverage"),
            min_price=opt("min_price"),
            max_price=opt("max_price"),
            status=row.get("status", "active"),
        )

    def to_details(self) -> dict[str, Any]:
        """The `markets_details` JSON object for this market (what the simulator serves)."""
        return {
            "coindcx_name": self.symbol,
            "symbol": self.symbol,
            "pair": self.pair,
            "ecode": self.pair.split("-", 1)[0],
            "base_currency_short_name": self.base,
            "target_currency_short_name": self.target,
            "base_currency_name": self.base,
            "target_currency_name": self.target,
            "min_quantity": float(self.min_quantity),
            "max_quantity": float(self.max_quantity),
            "max_quantity_market": float(self.max_quantity),
            "min_price": float(self.min_price) if self.min_price is not None else None,
            "max_price": float(self.max_price) if self.max_price is not None else None,
            "min_notional": float(self.min_notional),
            "base_currency_precision": self.price_precision,
            "target_currency_precision": self.quantity_precision,
            "step": float(self.step),
            "order_types": ["market_order", "limit_order"],
            "bo_sl_safety_percent": None,
            "max_leverage": float(self.max_leverage) if self.max_leverage is not None else None,
            "max_leverage_short": float(self.max_leverage) if self.max_leverage is not None else None,
            "status": self.status,
        }


def _spot(
    target: str, pp: int, qp: int, step: str, min_q: str, max_q: str, min_notional: str = "5"
) -> Market:
    return Market(
        symbol=f"{target}USDT",
        pair=f"B-{target}_USDT",
        target=target,
        base="USDT",
        price_precision=pp,
        quantity_precision=qp,
        step=Decimal(step),
        min_quantity=Decimal(min_q),
        max_quantity=Decimal(max_q),
        min_notional=Decimal(min_notional),
        kind="spot",
    )


def _futures(spot: Market, tick: str, qty_inc: str, max_leverage: int = 20) -> Market:
    return Market(
        symbol=spot.pair,  # futures are named by pair everywhere
        pair=spot.pair,
        target=spot.target,
        base="USDT",
        price_precision=max(0, -Decimal(tick).as_tuple().exponent),
        quantity_precision=max(0, -Decimal(qty_inc).as_tuple().exponent),
        step=Decimal(qty_inc),
        min_quantity=Decimal(qty_inc),
        max_quantity=spot.max_quantity,
        min_notional=Decimal("5"),
        kind="futures",
        max_leverage=Decimal(max_leverage),
        price_increment=Decimal(tick),
    )


# Realistic Binance-routed USDT markets (precisions and steps as CoinDCX lists them).
SPOT_MARKETS: dict[str, Market] = {
    m.symbol: m
    for m in (
        _spot("BTC", 2, 5, "0.00001", "0.00001", "9000"),
        _spot("ETH", 2, 4, "0.0001", "0.0001", "9000"),
        _spot("SOL", 2, 3, "0.001", "0.001", "90000"),
        _spot("BNB", 1, 3, "0.001", "0.001", "90000"),
        _spot("XRP", 4, 1, "0.1", "0.1", "9000000"),
        _spot("SUI", 4, 1, "0.1", "0.1", "9000000"),
    )
}
FUTURES_MARKETS: dict[str, Market] = {
    f.pair: f
    for f in (
        _futures(SPOT_MARKETS["BTCUSDT"], "0.1", "0.001", 25),
        _futures(SPOT_MARKETS["ETHUSDT"], "0.01", "0.01", 25),
        _futures(SPOT_MARKETS["SOLUSDT"], "0.01", "1", 20),
        _futures(SPOT_MARKETS["BNBUSDT"], "0.01", "0.01", 20),
        _futures(SPOT_MARKETS["XRPUSDT"], "0.0001", "1", 20),
        _futures(SPOT_MARKETS["SUIUSDT"], "0.0001", "1", 20),
    )
}


def default_market(symbol: str) -> Market:
    """Built-in metadata for a known symbol or futures pair (used offline and by the simulator)."""
    if symbol in SPOT_MARKETS:
        return SPOT_MARKETS[symbol]
    if symbol in FUTURES_MARKETS:
        return FUTURES_MARKETS[symbol]
    known = ", ".join([*SPOT_MARKETS, *FUTURES_MARKETS])
    raise ValidationError("symbol", f"is not a known market: {symbol!r} (known: {known})")
