"""A futures order and a position as the simulator keeps them, and their CoinDCX JSON shapes.

Apart from the desk (`futures.py`) so the matching rules read without the wire format in between.
Compared by identity (`eq=False`): the desk finds an order's trigger legs with `is`.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal
from typing import Any

from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.simulator.accounts import ZERO, Account
from xcoin_trading.exchange.simulator.wire import jnum, new_id

MARGIN = "USDT"


@dataclass(slots=True, eq=False)
class _OnMarket:
    """What every order and position starts with: whose it is and where."""

    account: Account = field(repr=False)
    market: Market


@dataclass(slots=True, eq=False)
class FuturesOrder(_OnMarket):
    """An entry, exit, trigger leg or liquidation; `locked` is its margin while it rests."""

    side: str
    order_type: str
    total: Decimal
    created_at: int
    leverage: Decimal
    _: KW_ONLY
    price: Decimal = ZERO
    stop_price: Decimal = ZERO
    client_order_id: str | None = None
    stage: str = "default"
    status: str = "open"
    id: str = field(init=False, default_factory=new_id)
    remaining: Decimal = field(init=False)
    updated_at: int = field(init=False)
    cancelled: Decimal = field(init=False, default=ZERO)
    avg_price: Decimal = field(init=False, default=ZERO)
    fee_amount: Decimal = field(init=False, default=ZERO)
    tp: Decimal | None = field(init=False, default=None)
    sl: Decimal | None = field(init=False, default=None)
    locked: Decimal = field(init=False, default=ZERO)  # margin held while resting
    group_id: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.remaining = self.total
        self.updated_at = self.created_at

    def to_json(self, fee_pct: Decimal) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "pair": self.market.pair,
            "side": self.side,
            "status": self.status,
            "order_type": self.order_type,
            "stop_trigger_instruction": "last_price",
            "notification": "no_notification",
            "leverage": jnum(self.leverage),
            "maker_fee": jnum(fee_pct),
            "taker_fee": jnum(fee_pct),
            "fee_amount": jnum(self.fee_amount),
            "price": jnum(self.price),
            "stop_price": jnum(self.stop_price),
            "avg_price": jnum(self.avg_price),
            "total_quantity": jnum(self.total),
            "remaining_quantity": jnum(self.remaining),
            "cancelled_quantity": jnum(self.cancelled),
            "ideal_margin": jnum(self.locked),
            "order_category": None,
            "stage": self.stage,
            "group_id": self.group_id,
            "position_margin_type": "isolated",
            "margin_currency_short_name": MARGIN,
            "take_profit_price": jnum(self.tp),
            "stop_loss_price": jnum(self.sl),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True, eq=False)
class Position(_OnMarket):
    """One account's signed position on one pair (isolated margin) and its TP/SL trigger legs."""

    leverage: Decimal
    updated_at: int
    id: str = field(init=False, default_factory=new_id)
    active_pos: Decimal = field(init=False, default=ZERO)
    avg_price: Decimal = field(init=False, default=ZERO)
    locked_margin: Decimal = field(init=False, default=ZERO)
    tp_order: FuturesOrder | None = field(init=False, default=None)
    sl_order: FuturesOrder | None = field(init=False, default=None)

    def liquidation_price(self, mmr: Decimal) -> Decimal | None:
        if self.active_pos == 0:
            return None
        inv = 1 / self.leverage
        factor = (1 - inv + mmr) if self.active_pos > 0 else (1 + inv - mmr)
        return self.market.round_price(self.avg_price * factor)

    def to_json(self, mmr: Decimal, mark: Decimal) -> dict[str, Any]:
        return {
            "id": self.id,
            "pair": self.market.pair,
            "active_pos": jnum(self.active_pos),
            "inactive_pos_buy": 0.0,
            "inactive_pos_sell": 0.0,
            "avg_price": jnum(self.avg_price),
            "liquidation_price": jnum(self.liquidation_price(mmr)),
            "locked_margin": jnum(self.locked_margin),
            "locked_user_margin": jnum(self.locked_margin),
            "locked_order_margin": 0.0,
            "take_profit_trigger": jnum(self.tp_order.stop_price) if self.tp_order else None,
            "stop_loss_trigger": jnum(self.sl_order.stop_price) if self.sl_order else None,
            "leverage": jnum(self.leverage),
            "maintenance_margin": jnum(abs(self.active_pos) * self.avg_price * mmr),
            "mark_price": jnum(mark),
            "margin_type": "isolated",
            "margin_currency_short_name": MARGIN,
            "updated_at": self.updated_at,
        }
