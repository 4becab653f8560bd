"""`xcoin data ...` as a user runs it: exit codes, reports, the one-line summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from click.testing import CliRunner

from tests.conftest import market_options, shared_data_file
from tests.fixtures.marketdata import BTC_1M_JAN
from xcoin_trading.cli import main
from xcoin_trading.exchange.client import CoinDCXClient
from xcoin_trading.marketdata.lake import list_days, partition_info, partition_path, read_partition
from xcoin_trading.timeframes import utcnow


def _run(*args: str):
    return CliRunner().invoke(main, ["data", *args], catch_exceptions=False)


def test_import_of_a_real_file_slice_lands_and_the_summary_shows_it():
    path = str(shared_data_file(BTC_1M_JAN))
    result = _run("import", path, *market_options("BTCUSDT", "1m", "2024-01-02", "2024-01-04"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith(
        "imported 4,320 BTCUSDT 1m candles into 3 day(s), rejected 0 day(s)"
    )
    assert len(result.stdout.strip().splitlines()) == 1
    assert list_days("BTCUSDT", "1m") == ["2024-01-02", "2024-01-03", "2024-01-04"]
    summary = _run("summary")
    assert summary.exit_code == 0
    assert (
        "BTCUSDT      1m        3       0       4,320     0        0  2024-01-02 00:00 → 2024-01-04 23:59   file"
        in summary.stdout
    )


def test_import_with_a_bad_row_exits_1_names_the_row_and_writes_the_good_days(btc_1m_three_days, tmp_path):
    path = tmp_path / "bad.csv"
    btc_1m_three_days.with_columns(
        pl.when(pl.int_range(pl.len()) == 10).then(-5.0).otherwise(pl.col("volume")).alias("volume")
    ).write_csv(path)
    result = _run("import", str(path), "--symbol", "BTCUSDT", "--resolution", "1m")
    assert result.exit_code == 1
    assert "2024-01-02: 1440 rows, nothing written" in result.stderr
    assert "row 10" in result.stderr and "volume < 0" in result.stderr
    assert "into 2 day(s), rejected 1 day(s)" in result.stdout
    assert list_days("BTCUSDT", "1m") == ["2024-01-03", "2024-01-04"]


def test_import_of_a_csv_without_volume_is_a_clear_error(btc_1m_three_days, tmp_path):
    path = tmp_path / "novol.csv"
    btc_1m_three_days.drop("volume").write_csv(path)
    result = _run("import", str(path), "--symbol", "BTCUSDT", "--resolution", "1m")
    assert result.exit_code == 2
    assert "error: file novol.csv is missing column(s) volume" in result.stderr
    assert list_days("BTCUSDT", "1m") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--symbol", "FOOUSDT"), "symbol is not a known market: 'FOOUSDT'"),
        (("--symbol", "BTCUSDT", "--start", "02/01/2024"), "start must be a UTC day YYYY-MM-DD"),
        (("--symbol", "BTCUSDT", "--end", "2999-01-01"), "end must not be after today"),
    ],
)
def test_backfill_refuses_bad_arguments_naming_them(args, message):
    base = {"--start": "2023-12-30"}
    merged = list(args) + [x for k, v in base.items() if k not in args for x in (k, v)]
    result = _run("backfill", "--resolution", "1m", *merged)
    assert result.exit_code == 2
    assert message in result.stderr


def test_backfill_from_the_exchange_stores_what_the_exchange_serves(on_simulator):
    result = _run(
        "backfill", "--symbol", "BTCUSDT", "--resolution", "1m", "--resolution", "1h",
        "--start", "2023-12-29", "--end", "2023-12-31",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # 3 days of 1m = 4,320 candles = 5 pages of <= 1000; 72 hourly candles = 1 page.
    line = result.stdout.strip()
    assert line.startswith(
        "backfilled 6 day(s) (0 partial), 4,392 candles, 0 day(s) failed checks, 6 exchange request(s), "
    )
    assert line.endswith(", source simulator (SIMULATOR: synthetic candles, not market history)")
    assert partition_info(partition_path("BTCUSDT", "1m", "2023-12-30")).source == "simulator"
    start = int(datetime(2023, 12, 30, tzinfo=UTC).timestamp() * 1000)
    with CoinDCXClient(on_simulator.url, on_simulator.url) as client:
        served = client.fetch_candles("BTCUSDT", "1m", start, start + 86_400_000)
    assert read_partition("BTCUSDT", "1m", "2023-12-30").equals(served)
    assert not partition_info(partition_path("BTCUSDT", "1h", "2023-12-31")).partial
    assert read_partition("BTCUSDT", "1h", "2023-12-31").height == 24


def test_backfill_without_an_exchange_configured_uses_the_in_process_simulator():
    now = utcnow()
    if now.hour == 0 and now.minute < 2:
        pytest.skip("today has no closed minute yet")
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    result = _run("backfill", "--symbol", "ETHUSDT", "--resolution", "1m", "--start", yesterday)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("backfilled 2 day(s) (1 partial)")
    today = partition_info(partition_path("ETHUSDT", "1m", now.strftime("%Y-%m-%d")))
    minutes_so_far = now.hour * 60 + now.minute
    assert today.partial
    # Closed minutes of today, allowing for a minute turning over while the test runs.
    assert minutes_so_far - 1 <= read_partition("ETHUSDT", "1m", today.day).height <= minutes_so_far + 1
    assert read_partition("ETHUSDT", "1m", yesterday).height == 1440


def test_the_demo_step_ingests_recent_days_and_prints_the_lake():
    from xcoin_trading.config import get_settings
    from xcoin_trading.demo.marketdata import DEMO_DAYS, ingest_demo_candles

    if utcnow().hour == 0 and utcnow().minute < 2:
        pytest.skip("today has no closed minute yet")
    lines: list[str] = []
    ingest_demo_candles(get_settings(), lines.append, ["BTCUSDT"])
    text = "\n".join(lines)
    assert "0 day(s) failed checks" in text
    one_minute = next(line for line in lines if line.split()[:2] == ["BTCUSDT", "1m"])
    assert one_minute.split()[2:4] == [str(DEMO_DAYS + 1), "1"]  # closed days + today (partial)
    assert list_days("BTCUSDT", "1d")[-1] == (utcnow() - timedelta(days=1)).strftime("%Y-%m-%d")
