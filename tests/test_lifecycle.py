"""One vocabulary for orders, trades and exits, and one rule applying an exchange answer: the fan-out
and the reconciler move a trade the same way, the SQL models and the backtest use the same values."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from xcoin_trading.backtest import kernel
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.live.dispatch import Intent, Job
from xcoin_trading.live.record import FanoutResult, record
from xcoin_trading.live.trades import EXIT_TYPES
from xcoin_trading.services.positions import ORDER_STATUSES, PENDING_STATUSES
from xcoin_trading.store import lifecycle
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.lifecycle import (
    ExecutionStatus,
    ExitReason,
    OrderStatus,
    TradeStatus,
    advance_trade,
    apply_report,
)
from xcoin_trading.store.models import Order, Trade
from xcoin_trading.strategy import contract

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
SQL_MODELS = Path(__file__).resolve().parents[1] / "dbt_like_sql" / "models"


def _report(status: str, total: str, filled: str, avg: str, fee: str, minute: int = 0) -> ExchangeOrder:
    total_q, filled_q = Decimal(total), Decimal(filled)
    at = T0 + timedelta(minutes=minute)
    return ExchangeOrder(
        id="ex-1", client_order_id="xc-1-1-E", market="BTCUSDT", side="buy", order_type="market_order",
        status=status, price=Decimal(0), avg_price=Decimal(avg), total_quantity=total_q,
        remaining_quantity=total_q - filled_q, filled_quantity=filled_q, fee_amount=Decimal(fee),
        created_at=T0, updated_at=at,
    )  # fmt: skip


def _entry_and_trade(quantity: str = "0.5") -> tuple[Order, Trade]:
    order = Order(leg="ENTRY", quantity=Decimal(quantity), status="SENDING", filled_quantity=Decimal(0),
                  fee=Decimal(0), trade_id=1)  # fmt: skip
    trade = Trade(id=1, status="PENDING", quantity=Decimal(quantity), entry_fee=Decimal(0), fees=Decimal(0),
                  flags=[])  # fmt: skip
    return order, trade


def test_a_partially_filled_entry_opens_its_trade_at_once_and_the_trade_follows_every_fill_exactly():
    order, trade = _entry_and_trade("0.5")
    # First fill: the position exists now, so the trade is open (its stop watched, its TP placed for it).
    assert (
        apply_report(order, _report("partially_filled", "0.5", "0.2", "100.10", "0.02002"), trade, T0) is None
    )
    assert (order.status, trade.status) == ("PARTIALLY_FILLED", "OPEN")
    assert (trade.quantity, trade.entry_price, trade.entry_fee, trade.fees) == (
        Decimal("0.2"), Decimal("100.10"), Decimal("0.02002"), Decimal("0.02002"),
    )  # fmt: skip
    assert trade.entry_time == T0 and trade.flags == []
    # More fills: the exchange's cumulative figures, exactly (no float, no re-averaging of our own).
    apply_report(order, _report("partially_filled", "0.5", "0.35", "100.1342857", "0.03504", 1), trade, T0)
    assert (trade.quantity, trade.entry_price, trade.fees) == (Decimal("0.35"), Decimal("100.1342857"),
                                                               Decimal("0.03504"))  # fmt: skip
    assert trade.entry_time == T0  # opened at the first fill
    # It ends short of what was asked: flagged, and the trade is what filled.
    apply_report(order, _report("partially_cancelled", "0.5", "0.35", "100.1342857", "0.03504", 2), trade, T0)
    assert (order.status, trade.status, trade.quantity) == ("CANCELLED", "OPEN", Decimal("0.35"))
    assert trade.flags == ["PARTIAL_ENTRY"]


def test_an_entry_that_ends_without_a_fill_fails_its_trade_and_a_full_fill_is_not_flagged():
    order, trade = _entry_and_trade()
    apply_report(order, _report("cancelled", "0.5", "0", "0", "0"), trade, T0)
    assert (order.status, trade.status, order.avg_price) == ("CANCELLED", "FAILED", None)
    order, trade = _entry_and_trade()
    apply_report(order, _report("filled", "0.5", "0.5", "101", "0.0505"), trade, T0)
    assert (trade.status, trade.quantity, trade.flags) == ("OPEN", Decimal("0.5"), [])
    order, trade = _entry_and_trade()  # resting, nothing filled yet: still pending
    apply_report(order, _report("open", "0.5", "0", "0", "0"), trade, T0)
    assert (order.status, trade.status) == ("OPEN", "PENDING")


@pytest.mark.parametrize(("leg", "reason"), [("TAKE_PROFIT", "TAKE_PROFIT"), ("STOP_LOSS", "STOP_LOSS"),
                                             ("EXIT", "SIGNAL")])  # fmt: skip
def test_a_filled_closing_leg_closes_an_open_trade_with_its_own_fill(leg, reason):
    order = Order(
        leg=leg, quantity=Decimal("0.5"), status="SENDING", filled_quantity=Decimal(0), fee=Decimal(0)
    )
    trade = Trade(status="OPEN", quantity=Decimal("0.5"), flags=[])
    closing = apply_report(order, _report("filled", "0.5", "0.5", "105.5", "0.05275", 3), trade, T0)
    assert closing == lifecycle.Exit(Decimal("105.5"), Decimal("0.05275"), reason, T0 + timedelta(minutes=3))
    trade.status = "CLOSED"  # a second answer for a closed trade closes nothing
    assert advance_trade(order, trade, T0) is None


def _seed_pending_entry(settings) -> tuple[int, int]:
    from xcoin_trading.services import credentials, strategies, subscriptions, users
    from xcoin_trading.vault import Vault

    with session_scope(settings) as s:
        user = users.register_user(s, "pat@lifecycle.test", "correct-horse-battery", name="pat")
        credentials.add_credential(
            s, Vault.from_settings(settings), user.id, "key-pat-0123456789", "secret-xyz"
        )
        st = strategies.create_strategy(s, user.id, name="sma", code="sma", symbol="BTCUSDT", resolution="5m",
                                        builtin="sma_crossover")  # fmt: skip
        sub = subscriptions.subscribe(s, user.id, st.id, capital=Decimal("10000"), risk_per_trade="0.01")
        trade = Trade(subscription_id=sub.id, strategy_id=st.id, user_id=user.id, symbol="BTCUSDT",
                      market_type="spot", side="LONG", quantity=Decimal("0.5"), status="PENDING")  # fmt: skip
        s.add(trade)
        s.flush()
        order = Order(subscription_id=sub.id, trade_id=trade.id, leg="ENTRY", client_order_id="xc-9-1-E",
                      market="BTCUSDT", side="buy", order_type="market_order", quantity=Decimal("0.5"),
                      status="SENDING")  # fmt: skip
        s.add(order)
        s.flush()
        return order.id, trade.id


def test_the_fan_out_records_a_partial_entry_by_the_same_rule_on_both_stores(store):
    order_id, trade_id = _seed_pending_entry(store)
    with session_scope(store) as s:
        job = Job(Intent.of(s.get(Order, order_id)), "spot", credential=None)
        job.result = _report("partially_cancelled", "0.5", "0.2", "100.10", "0.02002")
        record(s, [job], T0, FanoutResult())
    with session_scope(store) as s:
        order, trade = s.get(Order, order_id), s.get(Trade, trade_id)
        assert (order.status, order.filled_quantity, order.avg_price) == ("CANCELLED", Decimal("0.2"),
                                                                          Decimal("100.10"))  # fmt: skip
        assert (trade.status, trade.quantity, trade.entry_price, trade.fees, trade.flags) == (
            "OPEN", Decimal("0.2"), Decimal("100.10"), Decimal("0.02002"), ["PARTIAL_ENTRY"],
        )  # fmt: skip


@pytest.mark.parametrize(
    ("lookup_error", "expected"),
    [(None, ("CANCELLED", "FAILED")), ("503 on the look-up", ("UNKNOWN", "PENDING"))],
)
def test_an_entry_held_back_behind_an_unconfirmed_exit_fails_unsent_unless_its_look_up_failed(
    store, lookup_error, expected
):
    """A held-back entry (its reversal's exit not confirmed) that was never sent is CANCELLED and
    fails its trade; one a dead worker may have sent, whose look-up by client id failed, is UNKNOWN
    (the reconciler asks again) — never a trade given up while its order might exist."""
    order_id, trade_id = _seed_pending_entry(store)
    with session_scope(store) as s:
        job = Job(Intent.of(s.get(Order, order_id)), "futures", credential=None)
        job.held_back = "not sent: the exit xc-9-1-X7 of trade 7 is not confirmed filled (503)"
        if lookup_error:
            job.failed(lookup_error, ambiguous=True)
        record(s, [job], T0, FanoutResult())
    with session_scope(store) as s:
        order, trade = s.get(Order, order_id), s.get(Trade, trade_id)
        assert (order.status, trade.status) == expected
        assert order.exchange_order_id is None


def test_a_pending_trade_settled_from_its_stored_entry_opens_at_the_exchanges_fill_time(store):
    """The reconciler opens a PENDING trade from an entry answer already stored: its entry time is
    the exchange's (in the answer), not when the row was last written (seconds to minutes later)."""
    from dataclasses import replace

    from xcoin_trading.live.accounts import ReconcileReport
    from xcoin_trading.live.reconcile import _settle_pending

    order_id, trade_id = _seed_pending_entry(store)
    filled_at = T0 + timedelta(seconds=7)
    answer = replace(_report("filled", "0.5", "0.5", "100.04", "0.05002"),
                     raw={"updated_at": int(filled_at.timestamp() * 1000), "created_at": int(T0.timestamp() * 1000)})  # fmt: skip
    with session_scope(store) as s:  # the answer stored, its trade not moved (as a dead worker left it)
        order = s.get(Order, order_id)
        for name, value in lifecycle.order_values(answer, order.quantity).items():
            setattr(order, name, value)
    with session_scope(store) as s:
        report = ReconcileReport()
        _settle_pending(s, report, None)
    with session_scope(store) as s:
        trade, order = s.get(Trade, trade_id), s.get(Order, order_id)
        assert (trade.status, trade.entry_price, trade.entry_time) == ("OPEN", Decimal("100.04"), filled_at)
        assert order.updated_at > filled_at  # the row's time, which the entry time is not
    assert report.transitions["pending_open"] == 1


def test_a_spot_take_profit_waits_for_its_entry_to_end_and_then_covers_all_that_filled(store):
    """The trade opens at the first fill (its stop is watched on what filled); the take profit, one
    resting sell of a fixed quantity, is placed once the entry is final, for exactly what filled."""
    from xcoin_trading.live.accounts import ReconcileReport
    from xcoin_trading.live.spot_guard import restore_take_profits

    order_id, trade_id = _seed_pending_entry(store)
    with session_scope(store) as s:
        s.get(Trade, trade_id).take_profit = Decimal("120")
        order = s.get(Order, order_id)
        apply_report(
            order, _report("partially_filled", "0.5", "0.2", "100.10", "0.02002"), s.get(Trade, trade_id), T0
        )
    prices = {"BTCUSDT": Decimal("101")}
    with session_scope(store) as s:
        assert s.get(Trade, trade_id).status == "OPEN"
        assert restore_take_profits(s, prices, set(), ReconcileReport()) == []
    with session_scope(store) as s:
        order = s.get(Order, order_id)
        apply_report(
            order, _report("filled", "0.5", "0.5", "100.04", "0.05002", 1), s.get(Trade, trade_id), T0
        )
    with session_scope(store) as s:
        [job] = restore_take_profits(s, prices, set(), ReconcileReport())
    assert (job.order.leg, job.send_quantity, job.order.quantity) == (
        "TAKE_PROFIT",
        Decimal("0.5"),
        Decimal("0.5"),
    )


ENTRY_COLUMNS = ("status", "quantity", "entry_price", "entry_fee", "fees", "entry_time", "flags")


@pytest.mark.parametrize("servers", [False, True], ids=["sqlite", "postgres"])
def test_the_reconciler_applies_an_entrys_answer_exactly_as_the_fan_out_recorded_it(
    live_world_factory, servers
):
    """A worker that died after sending and before recording: the reconciler asks the exchange for
    the entry and moves the trade by the same rule, to the same row the fan-out wrote."""
    from tests.fixtures.live import START
    from xcoin_trading.live.coordinator import live_context, run_candle_close
    from xcoin_trading.live.reconcile import reconcile_once

    world = live_world_factory(2, servers=servers)
    world.set_action("LONG")
    close = START + timedelta(hours=1)
    world.admin.advance(to_ms=int(close.timestamp() * 1000))
    [report] = run_candle_close(live_context(world.settings), "BTCUSDT", "1m", close,
                                now=close + timedelta(seconds=1))  # fmt: skip
    assert report.status == "COMPLETED", report.error
    world.set_action("HOLD")
    with session_scope(world.settings) as s:
        entries = list(s.scalars(sa.select(Order).where(Order.leg == "ENTRY").order_by(Order.id)))
        recorded = {
            o.trade_id: tuple(getattr(s.get(Trade, o.trade_id), c) for c in ENTRY_COLUMNS) for o in entries
        }
        assert len(recorded) == 2 and all(r[0] == "OPEN" and r[1] > 0 for r in recorded.values())
        for order in entries:  # as the plan left them: sent, nothing recorded
            order.status, order.filled_quantity, order.avg_price, order.fee = (
                "SENDING",
                Decimal(0),
                None,
                Decimal(0),
            )
            trade = s.get(Trade, order.trade_id)
            trade.status, trade.entry_price, trade.entry_fee, trade.fees, trade.entry_time = (
                "PENDING", None, Decimal(0), Decimal(0), None,
            )  # fmt: skip
    reconcile_once(live_context(world.settings), now=close + timedelta(seconds=2))
    with session_scope(world.settings) as s:
        again = {t: tuple(getattr(s.get(Trade, t), c) for c in ENTRY_COLUMNS) for t in recorded}
    assert again == recorded


def test_the_store_vocabulary_is_the_one_the_api_and_the_live_code_name():
    # Stored values and the API's status filter (its order is the error message's): never renamed.
    assert ORDER_STATUSES == ("INTENT", "SENDING", "OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED",
                              "UNKNOWN", "LOST", "EXTERNAL")  # fmt: skip
    assert set(PENDING_STATUSES) == {"INTENT", "SENDING", "OPEN", "PARTIALLY_FILLED", "UNKNOWN"}
    assert set(EXIT_TYPES) == {"TAKE_PROFIT", "STOP_LOSS", "SIGNAL", "LIQUIDATION", "MANUAL", "END"}
    assert set(lifecycle.WATCHED) <= set(lifecycle.PENDING) and "INTENT" not in lifecycle.WATCHED
    assert set(lifecycle.FINAL).isdisjoint(lifecycle.PENDING)


def test_backtest_exit_reasons_keep_their_stored_labels_and_map_onto_the_live_exit_types():
    assert kernel.REASONS == ("SL", "TP", "SIGNAL", "END")  # stored in backtest results: unchanged
    for code, label in enumerate(kernel.REASONS):
        reason = ExitReason.of_backtest(label)
        assert reason.backtest_label == label and reason.value in EXIT_TYPES
        assert code == {"SL": kernel.REASON_SL, "TP": kernel.REASON_TP, "SIGNAL": kernel.REASON_SIGNAL,
                        "END": kernel.REASON_END}[label]  # fmt: skip
    assert ExitReason.of_backtest("SL") == "STOP_LOSS" and ExitReason.of_backtest("TP") == "TAKE_PROFIT"


def test_action_codes_have_one_definition_the_kernel_and_the_polars_enum_agree_on():
    codes = pl.Series(list(contract.ACTIONS), dtype=contract.ACTION_DTYPE).to_physical().to_list()
    assert codes == [a.value for a in contract.Action]
    assert (kernel.HOLD, kernel.LONG, kernel.SHORT) == (contract.Action.HOLD, contract.Action.LONG,
                                                        contract.Action.SHORT)  # fmt: skip
    assert all(type(c) is int for c in (contract.HOLD, contract.LONG, contract.SHORT, contract.EXIT))


_STATUS = re.compile(r"\b(?:(\w+)\.)?status\s*(=|<>|!=|IN)\s*(\('[^)]*'\)|'[^']*')", re.IGNORECASE)
_TABLE_STATUSES = {
    "orders": {s.value for s in OrderStatus},
    "trades": {s.value for s in TradeStatus},
    "strategy_executions": {s.value for s in ExecutionStatus},
}


def _status_literals(sql: str) -> list[tuple[str, set[str]]]:
    """(table, literals) of every `status = '…'` / `status IN ('…')` in a model."""
    aliases = {
        m[1] or m[0]: m[0] for m in re.findall(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?", sql, re.I)
    }
    tables = [t for t in aliases.values() if t in _TABLE_STATUSES]
    out = []
    for alias, _, literal in _STATUS.findall(sql):
        table = aliases.get(alias) if alias else (tables[0] if len(set(tables)) == 1 else None)
        assert table in _TABLE_STATUSES, f"cannot tell the table of status {literal} (alias {alias!r})"
        out.append((table, set(re.findall(r"'([^']*)'", literal))))
    return out


def test_the_sql_models_compare_statuses_against_the_enums_values():
    checked = 0
    for path in sorted(SQL_MODELS.glob("*.sql")):
        for table, literals in _status_literals(path.read_text()):
            assert literals <= _TABLE_STATUSES[table], (path.name, table, literals - _TABLE_STATUSES[table])
            checked += 1
    assert checked >= 15
    pending = re.search(r"o\.status IN \(([^)]*)\)\) AS pending_orders", (SQL_MODELS / "order_history_summary.sql")
                        .read_text())  # fmt: skip
    assert set(re.findall(r"'([^']*)'", pending[1])) == set(lifecycle.PENDING)
