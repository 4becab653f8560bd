"""Faults and idempotency: lost replies, 5xx, timeouts, 429, latency; never a second order."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from click.testing import CliRunner

from tests.fixtures.exchange import funded_account
from xcoin_trading.cli import main
from xcoin_trading.exchange.client import CoinDCXClient
from xcoin_trading.exchange.errors import ExchangeTimeout, RateLimited, ServerError
from xcoin_trading.exchange.ratelimit import RateLimiter
from xcoin_trading.exchange.simulator import SimulatorProcess, parse_fault_spec

CREATE = "orders/create"


def _orders_on_exchange(acct) -> int:
    return sum(1 for e in acct.ledger() if e["kind"] == "trade" and e["currency"] == "BTC")


def test_lost_reply_then_lookup_finds_the_order_instead_of_placing_another(account):
    account.admin.set_faults(lost_reply=1, count=1, endpoints=[CREATE])
    with pytest.raises(ServerError) as info:
        account.client.create_order("BTCUSDT", "buy", "market_order", "0.01", client_order_id="entry-1")
    assert info.value.ambiguous
    assert _orders_on_exchange(account) == 1  # the exchange DID execute it
    found = account.client.find_order_by_client_id("entry-1", "BTCUSDT")
    assert found is not None and found.status == "filled"
    again = account.client.create_order_idempotent(
        "BTCUSDT", "buy", "market_order", "0.01", client_order_id="entry-1"
    )
    assert again.id == found.id
    assert _orders_on_exchange(account) == 1
    assert account.client.balance("BTC").balance == Decimal("0.01")


def test_idempotent_create_survives_a_lost_reply_seen_as_timeout(simulator):
    acct = funded_account(simulator, timeout=0.5)
    acct.admin.set_faults(lost_reply=1, count=1, endpoints=[CREATE], lost_reply_delay_s=1.5)
    order = acct.client.create_order_idempotent(
        "BTCUSDT", "buy", "market_order", "0.01", client_order_id="entry-2"
    )
    assert order.client_order_id == "entry-2" and order.status == "filled"
    assert _orders_on_exchange(acct) == 1
    acct.close()


def test_idempotent_create_sends_again_only_when_the_order_is_known_absent(account):
    account.admin.set_faults(error_5xx=1, count=1, endpoints=[CREATE])  # refused before execution
    order = account.client.create_order_idempotent(
        "BTCUSDT", "buy", "market_order", "0.01", client_order_id="entry-3"
    )
    assert order.status == "filled"
    assert _orders_on_exchange(account) == 1
    assert account.admin.faults()["injected"] == {"5xx": 1}


def test_plain_create_is_never_retried_after_a_timeout(simulator):
    acct = funded_account(simulator, timeout=0.5)
    acct.admin.set_faults(timeout=1, count=1, endpoints=[CREATE], timeout_s=1.0)
    with pytest.raises(ExchangeTimeout):
        acct.client.create_order("BTCUSDT", "buy", "market_order", "0.01", client_order_id="entry-4")
    assert _orders_on_exchange(acct) == 0
    assert acct.client.find_order_by_client_id("entry-4", "BTCUSDT") is None
    acct.close()


def test_futures_lost_reply_is_resolved_from_the_order_list(account):
    account.admin.set_faults(lost_reply=1, count=1, endpoints=["futures/orders/create"])
    order = account.client.create_order_idempotent(
        "B-BTC_USDT", "sell", "market_order", "0.01", client_order_id="short-1", kind="futures"
    )
    assert order.kind == "futures" and order.client_order_id == "short-1"
    assert [p.active_pos for p in account.client.futures_positions()] == [Decimal("-0.01")]


def test_reads_retry_through_5xx_timeouts_and_429(simulator):
    acct = funded_account(simulator, timeout=0.5)
    acct.admin.set_faults(
        {"error_5xx": 1, "count": 1, "endpoints": ["users/balances"]},
        {"timeout": 1, "count": 1, "endpoints": ["users/balances"], "timeout_s": 1.0},
        {"error_429": 1, "count": 1, "endpoints": ["users/balances"]},
    )
    assert acct.client.balance("USDT").balance == Decimal(10000)
    assert acct.admin.faults()["injected"] == {"5xx": 1, "timeout": 1, "429": 1}
    acct.close()


def test_rate_limited_carries_retry_after(simulator, account):
    account.admin.set_faults(error_429=1, count=1, retry_after_s=3)
    client = CoinDCXClient(simulator.url, simulator.url, account.credentials, read_attempts=1)
    with client, pytest.raises(RateLimited) as info:
        client.balances()
    assert info.value.retry_after == 3.0


def test_simulator_enforces_the_published_per_key_limit_and_the_client_paces_itself(simulator, account):
    raw = CoinDCXClient(
        simulator.url,
        simulator.url,
        account.credentials,
        rate_limiter=RateLimiter.disabled(),
        read_attempts=1,
    )
    limited = 0
    with raw:
        for _ in range(40):
            try:
                raw.user_info()
            except RateLimited as exc:
                limited += 1
                assert exc.retry_after is not None and exc.retry_after >= 1
    assert limited > 0  # 16/s per key
    time.sleep(1.1)
    paced = funded_account(simulator)  # default client: shared per-key token buckets
    for _ in range(20):
        paced.client.user_info()  # no 429 reaches the caller
    paced.close()


def test_latency_fault_delays_replies(account):
    account.admin.set_faults(latency_ms=300, endpoints=["users/info"])
    started = time.perf_counter()
    account.client.user_info()
    assert time.perf_counter() - started >= 0.3


def test_fault_spec_parsing_names_bad_settings():
    rules = parse_fault_spec("5xx=0.1,429=0.05;lost_reply=1,count=2,endpoints=orders/create|orders/cancel")
    assert (rules[0].error_5xx, rules[0].error_429) == (0.1, 0.05)
    assert rules[1].endpoints == ("orders/create", "orders/cancel") and rules[1].count == 2
    with pytest.raises(ValueError, match="bogus"):
        parse_fault_spec("bogus=1")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        parse_fault_spec("5xx=2")
    result = CliRunner().invoke(main, ["exchange", "serve", "--faults", "nope=1"])
    assert result.exit_code == 2 and "faults" in result.output


def test_cli_add_account_funds_an_account_on_a_running_simulator(simulator, sim_admin):
    result = CliRunner().invoke(
        main,
        ["exchange", "add-account", "--url", simulator.url, "--api-key", "cli-key-123456", "--api-secret", "cli-secret-xyz",
         "--balance", "USDT=10000", "--balance", "btc=0.5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cli-secret-xyz" not in result.output
    assert sim_admin.balances("cli-key-123456") == {
        "USDT": {"balance": "10000", "locked_balance": "0"},
        "BTC": {"balance": "0.5", "locked_balance": "0"},
    }
    bad = CliRunner().invoke(
        main,
        [
            "exchange",
            "add-account",
            "--url",
            simulator.url,
            "--api-key",
            "k",
            "--api-secret",
            "s",
            "--balance",
            "USDT",
        ],
    )
    assert bad.exit_code == 2 and "balance" in bad.output


def test_cli_serve_runs_a_simulator_process():
    with SimulatorProcess(["--seed", "3"]) as proc, CoinDCXClient(proc.url, proc.url) as client:
        assert {t.market for t in client.ticker()} >= {"BTCUSDT", "ETHUSDT"}
