"""Market metadata (`symbol` vs `pair`, precisions, step, minimums) and exact rounding.

CoinDCX names: `symbol` is `BTCUSDT`; `pair` is `B-BTC_USDT` (look it up, never build it).
`target` is the traded coin (quantity), `base` the price currency (CoinDCX's inverted terms).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Literal

from xcoin_trading.errors import ValidationError
from xcoin_trading.money import to_decimal

MarketKind = Literal["spot", "futures"]


def _exact(value: Any) -> Decimal:
    """A listed number as the exchange means it: `5.0` is 5, `1e-05` is 0.00001 (messages, JSON)."""
    d = to_decimal(value)
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


def _places(increment: Decimal) -> int:
    """Decimal places of a price or quantity increment (0.001 → 3, 10 → 0)."""
    exponent = increment.normalize().as_tuple().exponent
    if not isinstance(exponent, int):  # 'n' / 'N' / 'F': NaN or infinity, no increment at all
        raise ValueError(f"increment {increment} is not a finite number")
    return max(0, -exponent)


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
        q = to_decimal(quantity)
        if q <= 0:
            return Decimal(0)
        stepped = (q / self.step).to_integral_value(rounding=ROUND_DOWN) * self.step
        return stepped.quantize(Decimal(1).scaleb(-self.quantity_precision), rounding=ROUND_DOWN)

    def round_price(self, price: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        p = to_decimal(price)
        ticks = (p / self.tick).to_integral_value(rounding=rounding)
        return (ticks * self.tick).quantize(self.tick)

    def check_order(self, quantity: Decimal, price: Decimal) -> None:
        """Refuse an order the exchange would refuse, with the reason and the numbers."""
        q, p = to_decimal(quantity), to_decimal(price)
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
    def from_instrument(cls, row: dict[str, Any], margin_currency: str | None = None) -> Market:
        """Build from one futures `instrument` object (`.../futures/data/instrument`)."""
        pair = row["pair"]
        tick, step = _exact(row["price_increment"]), _exact(row["quantity_increment"])
        leverage = row.get("max_leverage_long")
        return cls(
            symbol=pair,  # futures are named by pair everywhere
            pair=pair,
            target=pair.split("-", 1)[1].split("_", 1)[0],
            base=margin_currency or row.get("margin_currency_short_name") or "USDT",
            price_precision=_places(tick),
            quantity_precision=_places(step),
            step=step,
            min_quantity=_exact(row["min_quantity"]),
            max_quantity=_exact(row["max_quantity"]),
            min_notional=_exact(row.get("min_notional") or 0),
            kind="futures",
            max_leverage=None if leverage is None else _exact(leverage),
            price_increment=tick,
            status=row.get("status", "active"),
        )

    def to_json(self) -> dict[str, Any]:
        """Exact (decimal strings) and complete: how the stored market list keeps it."""
        return {
            f.name: (str(v) if isinstance(v := getattr(self, f.name), Decimal) else v) for f in fields(self)
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Market:
        decimals = {f.name for f in fields(cls) if "Decimal" in str(f.type)}
        # A stored JSON row: the dataclass fields name its keys, of many value types.
        values: dict[str, Any] = {
            k: (None if v is None else to_decimal(v)) if k in decimals else v for k, v in row.items()
        }
        return cls(**values)

    @classmethod
    def from_details(cls, row: dict[str, Any]) -> Market:
        """Build from one `markets_details` object (numbers may be strings)."""

        def opt(key: str) -> Decimal | None:
            v = row.get(key)
            return None if v is None else _exact(v)

        return cls(
            symbol=row.get("coindcx_name") or row["symbol"],
            pair=row["pair"],
            target=row["target_currency_short_name"],
            base=row["base_currency_short_name"],
            price_precision=int(row["base_currency_precision"]),
            quantity_precision=int(row["target_currency_precision"]),
            step=_exact(row.get("step") or Decimal(1).scaleb(-int(row["target_currency_precision"]))),
            min_quantity=_exact(row["min_quantity"]),
            max_quantity=_exact(row["max_quantity"]),
            min_notional=_exact(row.get("min_notional") or 0),
            kind="spot",
            max_leverage=opt("max_leverage"),
            min_price=opt("min_price"),
            max_price=opt("max_price"),
            status=row.get("status", "active"),
        )


def _bundled() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "fixtures" / "coindcx_markets.json").read_text())


BUNDLED = _bundled()  # CoinDCX's real shapes; what the simulator serves and what applies before a refresh
BUNDLED_SPOT: list[Market] = [Market.from_details(row) for row in BUNDLED["spot"]]
BUNDLED_FUTURES: list[Market] = [Market.from_instrument(row) for row in BUNDLED["futures"]]
# The markets the simulator trades: active USDT spot (Binance-routed) and active futures.
SPOT_MARKETS: dict[str, Market] = {
    m.symbol: m for m in BUNDLED_SPOT if m.status == "active" and m.base == "USDT" and m.pair.startswith("B-")
}
FUTURES_MARKETS: dict[str, Market] = {m.pair: m for m in BUNDLED_FUTURES if m.status == "active"}
