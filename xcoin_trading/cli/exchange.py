"""`xcoin exchange serve` (run the CoinDCX-compatible simulator) and `xcoin exchange add-account`."""

from __future__ import annotations

import click

from xcoin_trading.errors import ValidationError


def _balances(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        currency, sep, amount = item.partition("=")
        if not sep or not currency.strip() or not amount.strip():
            raise ValidationError("balance", f"must look like USDT=10000, got {item!r}")
        out[currency.strip().upper()] = amount.strip()
    return out


def register(main: click.Group) -> None:
    @main.group("exchange")
    def exchange() -> None:
        """The CoinDCX exchange simulator."""

    @exchange.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8765, show_default=True, type=int, help="0 picks a free port")
    @click.option(
        "--replay",
        "replay",
        type=click.Path(exists=True, dir_okay=False),
        help="candle Parquet file to replay",
    )
    @click.option("--symbol", default="BTCUSDT", show_default=True, help="market the replayed file feeds")
    @click.option("--seed", default=0, show_default=True, type=int, help="seed of the generated feeds")
    @click.option(
        "--speed",
        type=float,
        default=None,
        help="run the clock in real time × SPEED (default: replay is manual, advanced by POST /_sim/advance)",
    )
    @click.option("--start-ms", type=int, default=None, help="simulator clock start (epoch ms)")
    @click.option(
        "--faults",
        default="",
        help="fault spec, e.g. '5xx=0.05,429=0.02;lost_reply=0.2,endpoints=orders/create'",
    )
    @click.option("--slippage", default="0", show_default=True, help="market-order slippage as a fraction")
    @click.option("--fee", default="0.001", show_default=True, help="spot fee rate (fraction of notional)")
    @click.option(
        "--liquidity", default=None, help="resting orders fill at most this share of a candle's volume"
    )
    @click.option("--no-rate-limits", is_flag=True, help="disable the published per-key rate limits")
    def serve(
        host: str, port: int, replay: str | None, symbol: str, seed: int, speed: float | None, start_ms: int | None,
        faults: str, slippage: str, fee: str, liquidity: str | None, no_rate_limits: bool,
    ) -> None:  # fmt: skip
        """Serve the simulator until interrupted (both /exchange/... and /market_data/... paths)."""
        import uvicorn

        from xcoin_trading.exchange.simulator.app import SimulatorApp
        from xcoin_trading.exchange.simulator.engine import Exchange, SimConfig
        from xcoin_trading.exchange.simulator.faults import Faults, parse_fault_spec
        from xcoin_trading.exchange.simulator.server import uvicorn_config

        try:
            rules = parse_fault_spec(faults)
        except ValueError as exc:
            raise ValidationError("faults", str(exc)) from None
        config = SimConfig(rate_limits=not no_rate_limits)
        config.update({"slippage": slippage, "spot_fee_rate": fee, "liquidity_fraction": liquidity})
        realtime = speed is not None or replay is None
        if replay:
            ex = Exchange.replay(
                {symbol: replay},
                start_ms=start_ms,
                seed=seed,
                realtime=realtime,
                speed=speed or 1.0,
                config=config,
            )
        else:
            ex = Exchange.random_walk(
                seed=seed, start_ms=start_ms, realtime=realtime, speed=speed or 1.0, config=config
            )
        app = SimulatorApp(ex, Faults(rules, seed=seed))
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound = sock.getsockname()[1]
        mode = "realtime" if realtime else "manual (POST /_sim/advance)"
        click.echo(
            f"xcoin simulator serving on http://{host}:{bound} clock={mode} now_ms={ex.clock.now()}",
            err=False,
        )
        server = uvicorn.Server(uvicorn_config(app))
        server.run(sockets=[sock])

    @exchange.command("add-account")
    @click.option("--url", required=True, help="base URL of a running simulator")
    @click.option("--api-key", required=True)
    @click.option("--api-secret", prompt=True, hide_input=True, envvar="XCOIN_SIM_API_SECRET")
    @click.option("--balance", "balances", multiple=True, help="CURRENCY=AMOUNT, repeatable")
    def add_account(url: str, api_key: str, api_secret: str, balances: tuple[str, ...]) -> None:
        """Create an account with starting balances on a running simulator."""
        from xcoin_trading.exchange.auth import mask_key
        from xcoin_trading.exchange.simulator.server import SimulatorAdmin

        funds = _balances(balances)
        with SimulatorAdmin(url) as admin:
            admin.add_account(api_key, api_secret, funds)
            shown = (
                ", ".join(f"{c}={v['balance']}" for c, v in admin.balances(api_key).items()) or "no balances"
            )
        click.echo(f"account {mask_key(api_key)} created on {url}: {shown}")
