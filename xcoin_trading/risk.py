"""Position sizing and risk limits, shared by the backtest and live execution (Decimal in/out).

Seed formula (docs/backtesting.md, "Strategies and rules"): `risk = capital × risk_per_trade`; with a stop loss
`size = risk / |entry − stop| × leverage`, without one `size = risk × leverage / entry`. Two
additions a live account forces on it: the size is capped to what the capital can carry
(`margin + entry fee <= capital`, margin = notional / leverage), because the exchange refuses
more, and to the market's maximum quantity; then it is rounded DOWN to the market's step, and
refused below the market's minimums.

The backtest kernel uses `size_position_float`, a float mirror of the same steps (tests check
that both agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from numba import njit

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import Market
from xcoin_trading.money import to_decimal


@dataclass(frozen=True)
class PositionSize:
    quantity: Decimal  # what to order: capped, rounded to the market
    risk_amount: Decimal  # capital × risk_per_trade
    formula_quantity: Decimal  # the seed formula before cap and rounding
    capped: bool  # True when the capital cap, not the risk, set the size


def _check_sizing_inputs(
    capital: Decimal,
    risk_per_trade: Decimal,
    entry: Decimal,
    stop: Decimal | None,
    leverage: Decimal,
    fee: Decimal,
) -> None:
    if capital <= 0:
        raise ValidationError("capital", f"must be > 0, got {capital}")
    if not 0 < risk_per_trade <= 1:
        raise ValidationError("risk_per_trade", f"must be in (0, 1], got {risk_per_trade}")
    if entry <= 0:
        raise ValidationError("entry_price", f"must be > 0, got {entry}")
    if stop is not None and (stop <= 0 or stop == entry):
        raise ValidationError("stop_loss", f"must be > 0 and differ from the entry {entry}, got {stop}")
    if leverage < 1:
        raise ValidationError("leverage", f"must be >= 1, got {leverage}")
    if not 0 <= fee < 1:
        raise ValidationError("fee_rate", f"must be in [0, 1), got {fee}")


def size_position(
    *,
    capital: Decimal | str | float,
    risk_per_trade: Decimal | str | float,
    entry_price: Decimal | str | float,
    stop_loss: Decimal | str | float | None,
    leverage: Decimal | str | float = 1,
    fee_rate: Decimal | str | float = 0,
    market: Market | None = None,
) -> PositionSize:
    """Size one entry. Raises `BelowMinimum` (naming the minimum) when the market refuses it."""
    capital, risk_per_trade, entry, lev, fee = (
        to_decimal(v) for v in (capital, risk_per_trade, entry_price, leverage, fee_rate)
    )
    stop = None if stop_loss is None else to_decimal(stop_loss)
    _check_sizing_inputs(capital, risk_per_trade, entry, stop, lev, fee)
    if market is not None and market.max_leverage is not None and lev > market.max_leverage:
        raise ValidationError("leverage", f"must be <= {market.max_leverage} for {market.symbol}, got {lev}")
    risk_amount = capital * risk_per_trade
    formula = risk_amount / abs(entry - stop) * lev if stop is not None else risk_amount * lev / entry
    cap = capital / (entry * (1 / lev + fee))
    quantity = min(formula, cap)
    if market is not None:
        # Above the market's maximum the exchange refuses the order: take the maximum instead.
        quantity = market.round_quantity(min(quantity, market.max_quantity))
        market.check_order(quantity, entry)
    return PositionSize(quantity, risk_amount, formula, cap < formula)


def entry_cost(quantity: Decimal, price: Decimal, leverage: Decimal, fee_rate: Decimal) -> Decimal:
    """What an entry takes from the account's free balance: margin (notional / leverage) plus the fee."""
    return quantity * price * (1 / leverage + fee_rate)


def fit_to_balance(
    quantity: Decimal, price: Decimal, leverage: Decimal, fee_rate: Decimal, free: Decimal, market: Market
) -> Decimal:
    """`quantity`, shrunk (down to the market's step) so the entry costs at most `free`. Raises
    `BelowMinimum` when what fits is below the market's minimum."""
    if entry_cost(quantity, price, leverage, fee_rate) <= free:
        return quantity
    affordable = max(Decimal(0), free) / (price * (1 / leverage + fee_rate))
    fitted = market.round_quantity(min(quantity, affordable)) if affordable > 0 else Decimal(0)
    market.check_order(fitted, price)
    return fitted


# Refusal codes of the float mirror (the kernel counts them per reason).
SIZE_OK, SIZE_BELOW_MIN_QTY, SIZE_BELOW_MIN_NOTIONAL, SIZE_NO_CAPITAL = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def size_position_float(
    capital: float,
    risk_per_trade: float,
    entry: float,
    stop: float,  # NaN: no stop loss
    leverage: float,
    fee_rate: float,
    step: float,  # <= 0: no market rounding
    quantity_decimals: int,
    min_quantity: float,
    min_notional: float,
    max_quantity: float,
) -> tuple[float, int]:
    """Float mirror of `size_position` for the kernel: (quantity, refusal code)."""
    if capital <= 0.0:
        return 0.0, SIZE_NO_CAPITAL
    risk_amount = capital * risk_per_trade
    q = risk_amount * leverage / entry if math.isnan(stop) else risk_amount / abs(entry - stop) * leverage
    cap = capital / (entry * (1.0 / leverage + fee_rate))
    if cap < q:
        q = cap
    if q > max_quantity:
        q = max_quantity
    if step > 0.0:
        # q / step of an exact multiple (say the max quantity) can land a hair below the integer;
        # the 1e-12 relative nudge keeps it there. round() then snaps k*step to the nearest float
        # of that decimal, as float(Decimal) would.
        q = round(math.floor(q / step * (1.0 + 1e-12)) * step, quantity_decimals)
        if q < min_quantity:
            return q, SIZE_BELOW_MIN_QTY
        if q * entry < min_notional:
            return q, SIZE_BELOW_MIN_NOTIONAL
    return q, SIZE_OK


def market_rounding_args(market: Market | None) -> tuple[float, int, float, float, float]:
    """(step, quantity_decimals, min_quantity, min_notional, max_quantity) for the float mirror."""
    if market is None:
        return 0.0, 0, 0.0, 0.0, math.inf
    return (
        float(market.step),
        market.quantity_precision,
        float(market.effective_min_quantity),
        float(market.min_notional),
        float(market.max_quantity),
    )


@dataclass(frozen=True)
class LimitCheck:
    allowed: bool
    reason: str | None = None


def check_entry_limits(
    *,
    open_positions: int,
    max_open_positions: int | None,
    realised_pnl_today: Decimal | str | float = 0,
    capital: Decimal | str | float | None = None,
    max_daily_loss_pct: Decimal | str | float | None = None,
) -> LimitCheck:
    """May a new position be opened? Max open positions, then max daily loss (a fraction of capital).

    A limit of None is "no limit". The reason names the limit and the numbers, for the audit row.
    """
    if open_positions < 0:
        raise ValidationError("open_positions", f"must be >= 0, got {open_positions}")
    if max_open_positions is not None:
        if max_open_positions < 1:
            raise ValidationError("max_open_positions", f"must be >= 1, got {max_open_positions}")
        if open_positions >= max_open_positions:
            return LimitCheck(False, f"max open positions reached: {open_positions} of {max_open_positions}")
    if max_daily_loss_pct is not None:
        limit, pnl = to_decimal(max_daily_loss_pct), to_decimal(realised_pnl_today)
        if not 0 < limit <= 1:
            raise ValidationError("max_daily_loss_pct", f"must be in (0, 1], got {limit}")
        if capital is None or to_decimal(capital) <= 0:
            raise ValidationError("capital", f"must be > 0 to apply a daily loss limit, got {capital}")
        allowed_loss = to_decimal(capital) * limit
        if -pnl >= allowed_loss:
            return LimitCheck(
                False,
                f"max daily loss reached: lost {-pnl} today, limit {allowed_loss} ({limit * 100}% of {capital})",
            )
    return LimitCheck(True)
