"""Demo step: the simulator in-process, each demo user's exchange account funded with their capital,
and balances read back through the real client with the user's decrypted keys."""

from __future__ import annotations

from collections.abc import Callable

from xcoin_trading.demo.accounts import DemoState, open_demo_accounts
from xcoin_trading.exchange.client import CoinDCXClient
from xcoin_trading.exchange.simulator import SimulatorAdmin, SimulatorServer
from xcoin_trading.vault import Vault


def show_exchange_balances(state: DemoState, vault: Vault, echo: Callable[[str], None]) -> None:
    with SimulatorServer.random_walk(seed=42) as sim, SimulatorAdmin(sim.url) as admin:
        accounts = open_demo_accounts(state, vault, admin)
        echo("")
        echo(f"Exchange: CoinDCX simulator at {sim.url} (seeded feed; same client and bytes as production)")
        with CoinDCXClient(sim.url, sim.url) as public:
            btc = next(t for t in public.ticker() if t.market == "BTCUSDT")
        echo(f"  BTCUSDT last {btc.last_price}  bid {btc.bid}  ask {btc.ask}")
        for email, creds in accounts.items():
            with CoinDCXClient(sim.url, sim.url, creds) as client:
                usdt = client.balance("USDT")
            echo(f"  {email:<20} {usdt.balance:>10} USDT free  {usdt.locked_balance} locked  (key {creds!r})")
