"""Markets come from the exchange: `xcoin markets refresh` (and the Dagster asset) store every spot
market and futures instrument with its fetch time; lookups use the stored list; an unknown or
inactive market is refused naming it and its status; DOGEUSDT trades end to end."""

from __future__ import annotations

import json
from decimal import Decimal

import dagster as dg
import pytest
from click.testing import CliRunner

from xcoin_trading.cli import main
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.catalog import catalog_path, default_market, load_catalog, tradable_market


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_refresh_stores_the_exchanges_list_with_its_fetch_time_and_lookups_use_it(on_simulator):
    assert load_catalog().fetched_at is None  # the bundled list before the first refresh
    out = _run("markets", "refresh")
    assert out.exit_code == 0, out.output
    stored = json.loads(catalog_path(get_settings()).read_text())
    assert stored["fetched_at"] and stored["source"] == on_simulator.url
    spot = {m["symbol"]: m for m in stored["spot"]}
    futures = {m["pair"]: m for m in stored["futures"]}
    assert len(spot) >= 40 and len(futures) >= 40
    assert spot["DOGEUSDT"]["step"] == "1" and spot["DOGEUSDT"]["price_precision"] == 5
    assert spot["LUNAUSDT"]["status"] == "inactive" and spot["BTCINR"]["base"] == "INR"
    assert (
        futures["B-DOGE_USDT"]["price_increment"] == "0.00001"
        and futures["B-BTC_USDT"]["max_leverage"] == "25"
    )
    # A market the exchange changes is seen after the next refresh (the stored file is the truth).
    stored["spot"] = [m | {"min_notional": "7"} if m["symbol"] == "DOGEUSDT" else m for m in stored["spot"]]
    catalog_path(get_settings()).write_text(json.dumps(stored))
    assert default_market("DOGEUSDT").min_notional == Decimal(7)
    assert load_catalog().fetched_at is not None and "fetched" in load_catalog().describe()


def test_unknown_and_inactive_markets_are_refused_naming_the_market_and_its_status(on_simulator):
    with pytest.raises(ValidationError) as unknown:
        default_market("NOPEUSDT")
    assert unknown.value.field == "symbol" and "'NOPEUSDT'" in str(unknown.value)
    assert "markets refresh" in str(unknown.value)
    with pytest.raises(ValidationError) as inactive:
        tradable_market("LUNAUSDT")
    assert "LUNAUSDT" in str(inactive.value) and "'inactive'" in str(inactive.value)
    assert default_market("LUNAUSDT").status == "inactive"  # still known (open trades need its rules)


def test_cli_list_show_and_refusals(on_simulator, master_key_env):
    listed = _run("markets", "list", "--kind", "spot", "--json")
    assert listed.exit_code == 0
    assert "DOGEUSDT" in {m["symbol"] for m in json.loads(listed.output)}
    table = _run("markets", "list", "--quote", "INR")
    assert table.exit_code == 0 and "BTCINR" in table.output and "BTCUSDT" not in table.output
    assert json.loads(_run("markets", "show", "B-DOGE_USDT").output)["kind"] == "futures"
    assert _run("markets", "show", "NOPE").exit_code == 2
    assert _run("db", "upgrade").exit_code == 0
    _run("users", "create", "--email", "m@x.io", "--password", "long-password")
    out = _run("strategies", "add", "--builtin", "sma_crossover", "--user", "m@x.io", "--code", "luna",
               "--symbol", "LUNAUSDT", "--resolution", "1m")  # fmt: skip
    assert (
        out.exit_code == 2 and "LUNAUSDT is not tradable on CoinDCX: its status is 'inactive'" in out.output
    )
    out = _run("strategies", "add", "--builtin", "sma_crossover", "--user", "m@x.io", "--code", "doge",
               "--symbol", "DOGEUSDT", "--resolution", "1m")  # fmt: skip
    assert out.exit_code == 0 and "DOGEUSDT 1m) added: VALID" in out.output, out.output


def test_refresh_with_the_exchange_unreachable_exits_1_and_keeps_the_list(monkeypatch, on_simulator):
    assert _run("markets", "refresh").exit_code == 0
    before = catalog_path(get_settings()).read_text()
    monkeypatch.setenv("COINDCX_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("COINDCX_PUBLIC_URL", "http://127.0.0.1:9")
    reset_settings()
    out = _run("markets", "refresh")
    assert out.exit_code == 1 and out.output.startswith("error:")
    assert catalog_path(get_settings()).read_text() == before


def test_dagster_asset_refreshes_the_list_with_counts_in_its_metadata(on_simulator):
    from xcoin_pipelines.defs.marketdata.markets import markets
    from xcoin_pipelines.defs.marketdata.resources import MarketDataExchange
    from xcoin_pipelines.resources import XcoinSettingsResource

    with dg.instance_for_test() as instance:
        result = dg.materialize([markets], instance=instance, resources={
            "xcoin": XcoinSettingsResource(), "market_data_exchange": MarketDataExchange()})  # fmt: skip
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["spot_markets"].value >= 40 and meta["futures_instruments"].value >= 40
    assert "LUNAUSDT" in meta["inactive"].value
    assert load_catalog().fetched_at is not None


def test_dogeusdt_trades_live_on_the_simulator(live_world_factory):
    from datetime import timedelta

    from tests.fixtures.live import START
    from xcoin_trading.live.coordinator import live_context, run_candle_close

    world = live_world_factory(2, symbol="DOGEUSDT")
    close = START + timedelta(hours=1)
    world.admin.advance(to_ms=int(close.timestamp() * 1000))
    [report] = run_candle_close(live_context(world.settings), "DOGEUSDT", "1m", close, now=close)
    assert (report.status, report.trades_created) == ("COMPLETED", 2), report.error
    for sub in world.keys:
        [fill] = world.fills(sub, "buy")
        assert fill.quantity == fill.quantity.to_integral_value()  # DOGE's step is 1 coin
