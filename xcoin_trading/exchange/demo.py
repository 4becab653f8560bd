"""Demo step: the simulator in-process, each demo user's exchange account funded with their capital,
and balances read back through the real client with the user's decrypted keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xcoin_trading.exchange.client import CoinDCXClient, Credentials
from xcoin_trading.exchange.simulator import SimulatorAdmin, SimulatorServer


def show_exchange_balances(state: Any, vault: Any, echo: Callable[[str], None]) -> None:
    from xcoin_trading.demo import DEMO_USERS
    from xcoin_trading.services import credentials
    from xcoin_trading.store.db import session_scope

    with SimulatorServer.random_walk(seed=42) as sim, SimulatorAdmin(sim.url) as admin:
        accounts: list[tuple[str, Credentials]] = []
        with session_scope(state.settings) as session:
            for demo in DEMO_USERS:
                keys = credentials.decrypt(
                    vault, credentials.active_credential(session, state.user_ids[demo.email])
                )
                creds = Credentials(keys.api_key.reveal(), keys.api_secret.reveal())
                admin.add_account(creds.api_key, creds.api_secret, {"USDT": str(demo.capital)})
                accounts.append((demo.email, creds))
        echo("")
        echo(f"Exchange: CoinDCX simulator at {sim.url} (seeded feed; same client and bytes as production)")
        with CoinDCXClient(sim.url, sim.url) as public:
            btc = next(t for t in public.ticker() if t.market == "BTCUSDT")
        echo(f"  BTCUSDT last {btc.last_price}  bid {btc.bid}  ask {btc.ask}")
        for email, creds in accounts:
            with CoinDCXClient(sim.url, sim.url, creds) as client:
                usdt = client.balance("USDT")
            echo(f"  {email:<20} {usdt.balance:>10} USDT free  {usdt.locked_balance} locked  (key {creds!r})")
