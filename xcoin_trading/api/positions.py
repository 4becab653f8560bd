"""`/api/positions`: open positions marked to the exchange ticker, order history, P&L summary."""

from __future__ import annotations

import logging
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Query
from pydantic.alias_generators import to_camel

from xcoin_trading import money
from xcoin_trading.api.convert import same_named
from xcoin_trading.api.deps import SessionDep, SettingsDep, UserDep
from xcoin_trading.api.errors import AnalyticsNotBuilt
from xcoin_trading.api.routing import ERROR
from xcoin_trading.api.routing import router as make_router
from xcoin_trading.api.schemas.positions import (
    OrderOut,
    OrdersOut,
    OrdersSummaryOut,
    PaginationOut,
    PnlSummaryOut,
    PositionOut,
    PositionsOut,
    PositionsSummaryOut,
)
from xcoin_trading.config import Settings
from xcoin_trading.errors import NotFound
from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.services import positions

log = logging.getLogger(__name__)
router = make_router(["positions"], prefix="/api/positions")
if TYPE_CHECKING:  # a Literal built from OrderStatus at run time, which a checker cannot read: a str to it
    StatusFilter = str
else:
    StatusFilter = Literal[positions.ORDER_STATUSES]


def ticker_prices(settings: Settings) -> tuple[dict[str, Decimal] | None, str | None]:
    """Last prices by spot symbol, or (None, reason) when the exchange cannot be asked."""
    from xcoin_trading.exchange.client import CoinDCXClient

    try:
        with CoinDCXClient.from_settings(settings, timeout=3.0, read_attempts=1) as client:
            return {t.market: t.last_price for t in client.ticker()}, None
    except ExchangeError as exc:
        log.warning("ticker unavailable: %s", exc)
        return None, "exchange ticker unavailable; unrealized P&L not computed"


@router.get("/current", response_model=PositionsOut)
def current(user: UserDep, session: SessionDep, settings: SettingsDep) -> PositionsOut:
    """Open trades with unrealized P&L at the ticker's last price (after the entry fee already paid;
    the exit fee is not known until the exit). Futures pairs are marked at their spot price."""
    rows = positions.open_trades(session, user.id)
    prices, error = ticker_prices(settings) if rows else ({}, None)
    marked = positions.current_positions(session, user.id, prices)
    out = [_position(p) for p in marked]
    whole = not any(o.problems for o in out)  # a bad row makes the totals unknown, not wrong
    priced = all(p.current_price is not None for p in marked)
    with localcontext(prec=positions.EXACT_DIGITS):  # sums of 38-digit amounts, exactly
        notional = sum((p.notional for p in marked), Decimal(0)) if whole else None
        margin = sum((p.margin for p in marked), Decimal(0)) if whole else None
        pnls = [p.unrealized_pnl for p in marked if p.unrealized_pnl is not None]
        # Priced but not computable (an unreadable stored amount) leaves the total unknown, not a 500.
        total_pnl = sum(pnls, Decimal(0)) if whole and priced and len(pnls) == len(marked) else None
    return PositionsOut(
        positions=out,
        summary=PositionsSummaryOut(
            open_positions=len(marked),
            total_notional=money.plain(notional),
            total_margin=money.plain(margin),
            total_unrealized_pnl=money.plain(total_pnl),
            prices_available=priced,
            price_error=None if priced else (error or "no ticker price for some symbols"),
        ),
    )


class _Fields:
    """Money fields of one stored row: a value that cannot be shown becomes null, and `problems`
    says which and why, instead of the whole response failing."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def amount(self, name: str, compute) -> str | None:
        try:
            return money.plain(compute())
        except (ArithmeticError, ValueError, TypeError):
            self.problems.append(f"{name} is not a finite amount in the stored row")
            return None

    def amounts(self, row: object, *names: str) -> dict[str, str | None]:
        """`amount` of each attribute, the problem named as the response's (camelCase) field."""
        return {name: self.amount(to_camel(name), lambda name=name: getattr(row, name)) for name in names}


def _position(p: positions.Position) -> PositionOut:
    t, f = p.trade, _Fields()
    return PositionOut.model_validate(  # one mapping of many value types, each checked by the schema
        {
            "trade_id": t.id,
            "strategy_name": p.strategy_name,
            **same_named(t, "subscription_id", "strategy_id", "symbol", "market_type", "side", "entry_time"),
            **f.amounts(t, "quantity", "leverage", "entry_price", "stop_loss", "take_profit", "entry_fee"),
            **f.amounts(p, "current_price", "unrealized_pnl", "unrealized_pnl_pct"),
            "problems": f.problems,
        }
    )


@router.get("/orders", response_model=OrdersOut)
def orders(
    user: UserDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=positions.MAX_PAGE_SIZE)] = 20,
    status: StatusFilter | None = None,
) -> OrdersOut:
    """Newest first. The summary covers all of the caller's orders, whatever the status filter."""
    result = positions.orders_page(session, user.id, page=page, limit=limit, status=status)
    summary = result.summary
    return OrdersOut(
        orders=[_order(o, strategy_id) for o, strategy_id in result.rows],
        pagination=PaginationOut(
            page=page, limit=limit, total=result.total, total_pages=(result.total + limit - 1) // limit
        ),
        summary=OrdersSummaryOut(
            total_orders=summary["total_orders"],
            filled_orders=summary["filled_orders"],
            pending_orders=summary["pending_orders"],
            cancelled_orders=summary["cancelled_orders"],
            rejected_orders=summary["rejected_orders"],
            total_volume=_Fields().amount("totalVolume", lambda: summary["total_volume"]),
            total_fees=_Fields().amount("totalFees", lambda: summary["total_fees"]),
        ),
    )


def _order(o, strategy_id: int | None) -> OrderOut:
    f = _Fields()
    return OrderOut.model_validate(  # one mapping of many value types, each checked by the schema
        {
            "strategy_id": strategy_id,
            **same_named(
                o, "id", "subscription_id", "trade_id", "leg", "client_order_id", "exchange_order_id"
            ),
            **same_named(o, "market", "side", "order_type", "status", "error", "created_at", "updated_at"),
            **f.amounts(o, "price", "stop_price", "quantity", "filled_quantity", "avg_price", "fee"),
            "problems": f.problems,
        }
    )


@router.get("/pnl", response_model=PnlSummaryOut, responses={503: ERROR("analytics not built yet")})
def pnl(
    user: UserDep,
    settings: SettingsDep,
    period: Literal["1d", "7d", "30d", "all"] = "7d",
) -> PnlSummaryOut:
    """The seed's P&L summary from the analytics warehouse (as fresh as its last build: `asOf`),
    with open positions marked to the exchange ticker. Periods are whole UTC days ending today."""
    from xcoin_trading.analytics.pnl import pnl_summary

    prices, _ = ticker_prices(settings)
    by_symbol = {}
    if prices:
        by_symbol = {
            sym: prices[positions.price_key(sym)]
            for sym in positions.ALL_SYMBOLS
            if positions.price_key(sym) in prices
        }
    try:
        summary = pnl_summary(settings, user.id, period, prices=by_symbol)
    except NotFound:  # the warehouse file does not exist yet; its path is not the user's business
        raise AnalyticsNotBuilt() from None
    return PnlSummaryOut.model_validate(jsonable(summary))


def jsonable(value: Any) -> Any:
    """Decimals as exact strings (FastAPI's encoder would make them floats)."""
    if isinstance(value, Decimal):
        return money.plain(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
