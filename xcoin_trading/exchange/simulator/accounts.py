"""Simulator accounts: wallets (free + locked per currency) and the ledger of every change.

Simulator choice: one wallet per currency serves spot and futures (no spot↔futures transfer is
needed); futures margin is shown as `locked_balance` of the margin currency. Every change of a
wallet is one ledger entry, so Σ(free_delta + locked_delta) per currency is the account's money
change and can be checked against the platform's trades to the last unit.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)


class SimError(Exception):
    """An error the simulator answers with CoinDCX's body `{"code", "message", "status": "error"}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Wallet:
    __slots__ = ("free", "locked")

    def __init__(self) -> None:
        self.free = ZERO
        self.locked = ZERO


@dataclass
class Account:
    api_key: str
    secret: bytes = field(repr=False)
    number: int
    wallets: dict[str, Wallet] = field(default_factory=dict)
    # (time, kind, currency, free_delta, locked_delta, free_after, locked_after, ref): made JSON only
    # when read (`ledger_json`); four Decimal→str per entry were a visible share of an order's CPU.
    ledger: list[tuple[Any, ...]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)  # spot trade_history rows
    orders: dict[str, Any] = field(default_factory=dict)  # spot orders by id
    by_client_id: dict[str, Any] = field(default_factory=dict)
    open_by_market: dict[str, dict[str, Any]] = field(default_factory=dict)
    futures_orders: dict[str, Any] = field(default_factory=dict)
    futures_by_client_id: dict[str, Any] = field(default_factory=dict)
    positions: dict[str, Any] = field(default_factory=dict)  # by pair
    leverage: dict[str, Decimal] = field(default_factory=dict)  # by pair
    _mac: Any = field(
        default=None, init=False, repr=False, compare=False
    )  # HMAC keyed once, copied per request

    def verify(self, payload: bytes, signature: str) -> bool:
        if self._mac is None:
            self._mac = hmac.new(self.secret, digestmod="sha256")
        mac = self._mac.copy()  # the key schedule done once: half the CPU of hmac.new per request
        mac.update(payload)
        return hmac.compare_digest(mac.hexdigest(), signature)

    def wallet(self, currency: str) -> Wallet:
        w = self.wallets.get(currency)
        if w is None:
            w = self.wallets[currency] = Wallet()
        return w

    def free(self, currency: str) -> Decimal:
        w = self.wallets.get(currency)
        return w.free if w else ZERO

    def _record(
        self,
        now_ms: int,
        kind: str,
        currency: str,
        free_delta: Decimal,
        locked_delta: Decimal,
        ref: str | None,
        w: Wallet,
    ) -> None:
        self.ledger.append((now_ms, kind, currency, free_delta, locked_delta, w.free, w.locked, ref))

    def ledger_json(self, since: int = 0) -> list[dict[str, Any]]:
        """`ledger[since:]` (list slicing: negative counts from the end) as JSON rows, each with
        its `seq` (position from 1) and amounts as strings."""
        rows = []
        for i in range(len(self.ledger))[since:]:
            now_ms, kind, currency, free_delta, locked_delta, free_after, locked_after, ref = self.ledger[i]
            rows.append(
                {
                    "seq": i + 1,
                    "time": now_ms,
                    "kind": kind,
                    "currency": currency,
                    "free_delta": str(free_delta),
                    "locked_delta": str(locked_delta),
                    "free_after": str(free_after),
                    "locked_after": str(locked_after),
                    "ref": ref,
                }
            )
        return rows

    def change(self, currency: str, amount: Decimal, kind: str, now_ms: int, ref: str | None = None) -> None:
        """Add (or remove, if negative) free funds: deposits, trades, fees, realised P&L."""
        if amount == 0:
            return
        w = self.wallet(currency)
        w.free += amount
        self._record(now_ms, kind, currency, amount, ZERO, ref, w)

    def lock(self, currency: str, amount: Decimal, kind: str, now_ms: int, ref: str | None = None) -> None:
        """Move free → locked; the caller has checked `free(currency) >= amount`."""
        if amount == 0:
            return
        w = self.wallet(currency)
        w.free -= amount
        w.locked += amount
        self._record(now_ms, kind, currency, -amount, amount, ref, w)

    def unlock(self, currency: str, amount: Decimal, kind: str, now_ms: int, ref: str | None = None) -> None:
        if amount == 0:
            return
        w = self.wallet(currency)
        w.free += amount
        w.locked -= amount
        self._record(now_ms, kind, currency, amount, -amount, ref, w)

    def spend_locked(
        self, currency: str, amount: Decimal, kind: str, now_ms: int, ref: str | None = None
    ) -> None:
        """Remove locked funds (a loss paid out of margin, e.g. liquidation)."""
        if amount == 0:
            return
        w = self.wallet(currency)
        w.locked -= amount
        self._record(now_ms, kind, currency, ZERO, -amount, ref, w)

    def balances_json(self) -> list[dict[str, str]]:
        return [
            {"currency": c, "balance": _plain(w.free), "locked_balance": _plain(w.locked)}
            for c, w in self.wallets.items()
        ]


def _plain(d: Decimal) -> str:
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
