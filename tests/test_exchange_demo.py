"""`xcoin demo` funds each demo user's simulator account and reads balances through the real client."""

from __future__ import annotations

from xcoin_trading.demo import DEMO_USERS, run_demo


def test_demo_shows_each_users_funded_exchange_balance():
    lines: list[str] = []
    run_demo(echo=lines.append)
    exchange = [line for line in lines if "USDT free" in line]
    assert len(exchange) == len(DEMO_USERS)
    for demo in DEMO_USERS:
        [line] = [x for x in exchange if demo.email in x]
        assert f" {demo.capital} USDT free" in line and "api_secret='***'" in line
