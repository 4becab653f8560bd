"""Typed values parsed from CoinDCX JSON. Numbers may arrive as numbers or strings, and times as
epoch ms (int, float or numeric string), epoch seconds, or ISO-8601 strings: all parse here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from xcoin_trading.money import decimal_or, optional_decimal
from xcoin_trading.timeframes import parse_utc

OPEN_STATUSES = frozenset({"init", "initial", "open", "partially_filled", "untriggered"})
TERMINAL_STATUSES = frozenset({"filled", "partially_cancelled", "cancelled", "rejected"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: Any) -> datetime:
    """Aware UTC datetime from ms / seconds (numbers or numeric strings) or an ISO string."""
    if value is None or value == "":
        return _EPOCH
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return parse_utc(text, "time") or _EPOCH
        value = number
    number = float(value)
    # Ticker timestamps are seconds; everything else is ms (anything past 1e11 is ms).
    seconds = number / 1000 if number > 1e11 else number
    return datetime.fromtimestamp(seconds, tz=UTC)


def _decimals(row: dict[str, Any], *names: str) -> dict[str, Decimal]:
    """Fields sent under their own name as a number or numeric string (absent or empty: 0)."""
    return {name: decimal_or(row.get(name)) for name in names}


@dataclass(frozen=True)
class Order:
    """A spot or futures order as the exchange reports it. `filled_quantity` is computed
    (spot orders carry no such field): total − remaining − cancelled."""

    id: str
    client_order_id: str | None
    market: str  # spot symbol, or the futures pair
    side: str
    order_type: str
    status: str
    price: Decimal
    avg_price: Decimal
    total_quantity: Decimal
    remaining_quantity: Decimal
    filled_quantity: Decimal
    fee_amount: Decimal
    created_at: datetime
    updated_at: datetime
    kind: str = "spot"
    leverage: Decimal | None = None
    stop_price: Decimal | None = None
    take_profit_price: Decimal | None = None
    stop_loss_price: Decimal | None = None
    stage: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_spot(cls, row: dict[str, Any]) -> Order:
        market = row.get("market") or row.get("symbol") or ""
        return cls._parse(row, "spot", market, decimal_or(row.get("price_per_unit")), Decimal(0))

    @classmethod
    def from_futures(cls, row: dict[str, Any]) -> Order:
        return cls._parse(
            row,
            "futures",
            row.get("pair", ""),
            decimal_or(row.get("price")),
            decimal_or(row.get("cancelled_quantity")),
            leverage=optional_decimal(row.get("leverage")),
            take_profit_price=optional_decimal(row.get("take_profit_price")),
            stop_loss_price=optional_decimal(row.get("stop_loss_price")),
            stage=row.get("stage"),
        )

    @classmethod
    def _parse(
        cls, row: dict[str, Any], kind: str, market: str, price: Decimal, cancelled: Decimal, **futures: Any
    ) -> Order:
        """The fields spot and futures orders share; the caller passes where the two differ."""
        total = decimal_or(row.get("total_quantity"))
        remaining = decimal_or(row.get("remaining_quantity"))
        return cls(
            id=str(row["id"]),
            client_order_id=row.get("client_order_id") or None,
            market=market,
            side=row.get("side", ""),
            order_type=row.get("order_type", ""),
            status=row.get("status", ""),
            price=price,
            total_quantity=total,
            remaining_quantity=remaining,
            filled_quantity=total - remaining - cancelled,
            created_at=parse_time(row.get("created_at")),
            updated_at=parse_time(row.get("updated_at") or row.get("created_at")),
            kind=kind,
            stop_price=optional_decimal(row.get("stop_price")),
            raw=row,
            **_decimals(row, "avg_price", "fee_amount"),
            **futures,
        )


@dataclass(frozen=True)
class Balance:
    currency: str
    balance: Decimal  # free
    locked_balance: Decimal

    @property
    def total(self) -> Decimal:
        return self.balance + self.locked_balance

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Balance:
        return cls(row["currency"], decimal_or(row.get("balance")), decimal_or(row.get("locked_balance")))


@dataclass(frozen=True)
class Ticker:
    market: str
    last_price: Decimal
    bid: Decimal
    ask: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal
    change_24_hour: Decimal
    timestamp: datetime

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Ticker:
        return cls(
            market=row["market"],
            timestamp=parse_time(row.get("timestamp")),
            **_decimals(row, "last_price", "bid", "ask", "high", "low", "volume", "change_24_hour"),
        )


@dataclass(frozen=True)
class OrderBook:
    pair: str
    bids: list[tuple[Decimal, Decimal]]  # best (highest) first
    asks: list[tuple[Decimal, Decimal]]  # best (lowest) first
    timestamp: datetime

    @classmethod
    def from_json(cls, pair: str, body: dict[str, Any]) -> OrderBook:
        def levels(side: dict[str, Any] | None, reverse: bool) -> list[tuple[Decimal, Decimal]]:
            return sorted(((decimal_or(p), decimal_or(q)) for p, q in (side or {}).items()), reverse=reverse)

        return cls(
            pair,
            levels(body.get("bids"), True),
            levels(body.get("asks"), False),
            parse_time(body.get("timestamp")),
        )


@dataclass(frozen=True)
class PublicTrade:
    price: Decimal
    quantity: Decimal
    symbol: str
    time: datetime
    buyer_is_maker: bool

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> PublicTrade:
        return cls(
            decimal_or(row.get("p")),
            decimal_or(row.get("q")),
            row.get("s", ""),
            parse_time(row.get("T")),
            bool(row.get("m")),
        )


@dataclass(frozen=True)
class AccountTrade:
    """One fill of one of our orders (`orders/trade_history`)."""

    id: str
    order_id: str
    side: str
    symbol: str
    price: Decimal
    quantity: Decimal
    fee_amount: Decimal
    timestamp: datetime

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> AccountTrade:
        return cls(
            id=str(row.get("id")),
            order_id=str(row.get("order_id")),
            side=row.get("side", ""),
            symbol=row.get("symbol", ""),
            timestamp=parse_time(row.get("timestamp")),
            **_decimals(row, "price", "quantity", "fee_amount"),
        )


@dataclass(frozen=True)
class Position:
    """A futures position; `active_pos` is signed (negative = short)."""

    id: str
    pair: str
    active_pos: Decimal
    avg_price: Decimal
    liquidation_price: Decimal | None
    locked_margin: Decimal
    leverage: Decimal
    take_profit_trigger: Decimal | None
    stop_loss_trigger: Decimal | None
    mark_price: Decimal | None
    updated_at: datetime
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def side(self) -> str:
        return "long" if self.active_pos > 0 else "short" if self.active_pos < 0 else "flat"

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Position:
        return cls(
            id=str(row["id"]),
            pair=row.get("pair", ""),
            leverage=decimal_or(row.get("leverage"), Decimal(1)),
            **_decimals(row, "active_pos", "avg_price", "locked_margin"),
            liquidation_price=optional_decimal(row.get("liquidation_price")),
            take_profit_trigger=optional_decimal(row.get("take_profit_trigger")),
            stop_loss_trigger=optional_decimal(row.get("stop_loss_trigger")),
            mark_price=optional_decimal(row.get("mark_price")),
            updated_at=parse_time(row.get("updated_at")),
            raw=row,
        )
