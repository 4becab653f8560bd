"""Real history in the formats it is published in: Binance's public kline files (CSV with or without a
header, zipped or not, ms or µs open times) and CoinDCX's candle JSON, made from the real candles in
../shared/data. Every day records its source; simulator days are marked; `data summary` shows gaps; a
backtest at a resolution the lake only has in 1m is built from the 1m candles."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime

import polars as pl
import pytest
from click.testing import CliRunner

from tests.conftest import shared_data_file
from xcoin_trading.cli import main
from xcoin_trading.marketdata.catalog import query
from xcoin_trading.marketdata.lake import load_candles, partition_info, partition_path

DAYS = (datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 5, tzinfo=UTC))  # 3 whole days


@pytest.fixture(scope="module")
def real() -> pl.DataFrame:
    """3 days of real BTCUSDT 1m candles, open_time as epoch ms."""
    frame = pl.read_parquet(shared_data_file("BTCUSDT-1m-2024-01.parquet"))
    frame = frame.with_columns(pl.col("open_time").dt.epoch("ms"))
    lo, hi = (int(d.timestamp() * 1000) for d in DAYS)
    return frame.filter((pl.col("open_time") >= lo) & (pl.col("open_time") < hi))


def _binance(frame: pl.DataFrame, micros: bool = False) -> pl.DataFrame:
    """The 12 kline columns as data.binance.vision publishes them."""
    scale = 1000 if micros else 1
    return frame.select(
        (pl.col("open_time") * scale).alias("open_time"),
        "open", "high", "low", "close", "volume",
        ((pl.col("open_time") + 59_999) * scale).alias("close_time"),
        (pl.col("volume") * pl.col("close")).alias("quote_volume"),
        pl.lit(100).alias("count"),
        (pl.col("volume") / 2).alias("taker_buy_volume"),
        (pl.col("volume") * pl.col("close") / 2).alias("taker_buy_quote_volume"),
        pl.lit(0).alias("ignore"),
    )  # fmt: skip


def _import(path, *extra: str):
    return CliRunner().invoke(
        main, ["data", "import", str(path), "--symbol", "BTCUSDT", "--resolution", "1m", *extra]
    )


def _assert_lake_holds(real: pl.DataFrame, source: str, origin: str) -> None:
    stored = load_candles("BTCUSDT", "1m", *DAYS)
    assert stored.equals(real.select(stored.columns))
    for day in ("2024-01-02", "2024-01-03", "2024-01-04"):
        info = partition_info(partition_path("BTCUSDT", "1m", day))
        assert (info.source, info.origin) == (source, origin)


def test_binance_csv_without_header_ms(tmp_path, real):
    path = tmp_path / "BTCUSDT-1m-2024-01.csv"
    _binance(real).write_csv(path, include_header=False)
    out = _import(path)
    assert out.exit_code == 0, out.output
    assert "imported 4,320 BTCUSDT 1m candles into 3 day(s)" in out.output and "source binance" in out.output
    _assert_lake_holds(real, "binance", path.name)


def test_binance_zip_with_header_and_microseconds(tmp_path, real):
    csv = tmp_path / "BTCUSDT-1m-2025-01.csv"
    _binance(real, micros=True).write_csv(csv)  # 2025+ files: a header and µs times
    path = tmp_path / "BTCUSDT-1m-2025-01.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(csv, csv.name)
    csv.unlink()
    out = _import(path)
    assert out.exit_code == 0, out.output
    _assert_lake_holds(real, "binance", path.name)


def test_binance_zip_without_header_ms(tmp_path, real):
    csv = tmp_path / "BTCUSDT-1m-2024-01.csv"
    _binance(real).write_csv(csv, include_header=False)
    path = tmp_path / "BTCUSDT-1m-2024-01.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(csv, csv.name)
    assert _import(path).exit_code == 0
    _assert_lake_holds(real, "binance", path.name)


def test_coindcx_candle_json_newest_first(tmp_path, real):
    rows = [
        {"open": o, "high": h, "low": lo, "volume": v, "close": c, "time": t}
        for t, o, h, lo, c, v in real.select("open_time", "open", "high", "low", "close", "volume").rows()
    ][::-1]  # as /market_data/candles sends them
    path = tmp_path / "candles.json"
    path.write_text(json.dumps(rows))
    out = _import(path)
    assert out.exit_code == 0 and "source coindcx" in out.output, out.output
    _assert_lake_holds(real, "coindcx", path.name)


def test_a_parquet_file_is_recorded_as_file_unless_told(tmp_path, real):
    path = tmp_path / "btc.parquet"
    real.write_parquet(path)
    assert _import(path).exit_code == 0
    _assert_lake_holds(real, "file", path.name)
    assert _import(path, "--source", "binance").exit_code == 0
    _assert_lake_holds(real, "binance", path.name)
    assert _import(path, "--source", "simulator").exit_code == 2  # only fetches from a simulator say that


def test_a_headerless_csv_of_another_shape_is_refused_naming_the_columns(tmp_path, real):
    path = tmp_path / "odd.csv"
    real.select("open_time", "open", "close").write_csv(path, include_header=False)
    out = _import(path)
    assert out.exit_code == 2 and "no header and 3 columns" in out.output


def test_summary_shows_gaps_and_marks_simulator_days(tmp_path, real, simulator, monkeypatch):
    from xcoin_trading.config import reset_settings

    holed = real.filter(~pl.col("open_time").is_between(real["open_time"][600], real["open_time"][604]))
    path = tmp_path / "holed.csv"
    _binance(holed).write_csv(path, include_header=False)
    assert _import(path).exit_code == 0
    monkeypatch.setenv("COINDCX_API_URL", simulator.url)
    monkeypatch.setenv("COINDCX_PUBLIC_URL", simulator.url)
    reset_settings()
    fetched = CliRunner().invoke(main, ["data", "backfill", "--symbol", "ETHUSDT", "--resolution", "1h",
                                        "--start", "2023-12-29", "--end", "2023-12-30"])  # fmt: skip
    assert fetched.exit_code == 0 and "SIMULATOR" in fetched.output
    summary = CliRunner().invoke(main, ["data", "summary"])
    assert summary.exit_code == 0
    lines = summary.output.splitlines()
    btc = next(line for line in lines if line.startswith("BTCUSDT"))
    assert btc.split()[5:7] == ["1", "5"] and btc.endswith("binance")  # 1 gap, 5 candles missing
    assert "gap: 5 candle(s) missing after 2024-01-02 09:59 (next 2024-01-02 10:05)" in summary.output
    eth = next(line for line in lines if line.startswith("ETHUSDT"))
    assert eth.endswith("SIMULATOR (synthetic)")
    assert "2 day(s) are SIMULATOR data" in summary.output
    days = query("SELECT symbol, source, simulated FROM candle_days ORDER BY symbol, date")
    assert days.rows() == [("BTCUSDT", "binance", False)] * 3 + [("ETHUSDT", "simulator", True)] * 2


def test_a_backtest_at_a_resolution_the_lake_has_only_in_1m_is_built_from_1m(tmp_path, real):
    """Oracle: Binance's own 1h candles for the same hours, backtested from the file."""
    path = tmp_path / "btc.csv"
    _binance(real).write_csv(path, include_header=False)
    assert _import(path).exit_code == 0
    common = ["--strategy", "sma_crossover", "--params", "fast=5,slow=12", "--no-save"]
    lake = tmp_path / "lake.json"
    out = CliRunner().invoke(main, ["backtest", "run", *common, "--symbol", "BTCUSDT", "--resolution", "1h",
                                    "--start", "2024-01-02", "--end", "2024-01-04", "--json", str(lake)])  # fmt: skip
    assert out.exit_code == 0, out.output
    hours = tmp_path / "binance-1h.json"
    out = CliRunner().invoke(main, ["backtest", "run", *common, "--resolution", "1h", "--data",
                                    str(shared_data_file("BTCUSDT-1h-2017-08_2024-12.parquet")),
                                    "--start", "2024-01-02", "--end", "2024-01-04", "--json", str(hours)])  # fmt: skip
    assert out.exit_code == 0, out.output
    from_1m, binance = json.loads(lake.read_text()), json.loads(hours.read_text())
    assert from_1m["metrics"]["candles"] == binance["metrics"]["candles"] == 72
    assert from_1m["metrics"]["totalTrades"] == binance["metrics"]["totalTrades"] > 0
    for a, b in zip(from_1m["trades"], binance["trades"], strict=True):
        assert (a["entry_time"], a["exit_time"], a["side"]) == (b["entry_time"], b["exit_time"], b["side"])
        assert a["entry_price"] == pytest.approx(b["entry_price"], rel=1e-12)


def test_embedded_backfill_before_the_simulators_history_is_refused_pointing_at_import():
    out = CliRunner().invoke(main, ["data", "backfill", "--symbol", "BTCUSDT", "--resolution", "1h",
                                    "--start", "2024-01-01", "--end", "2024-01-31"])  # fmt: skip
    assert out.exit_code == 2
    assert "start 2024-01-01 is before the embedded simulator's history" in out.output
    assert "xcoin data import" in out.output


def test_xcoin_sql_sees_the_candle_lake_before_and_after_the_warehouse_is_built(tmp_path, real):
    path = tmp_path / "btc.parquet"
    real.write_parquet(path)
    assert _import(path).exit_code == 0
    sql = "SELECT count(*) AS n, min(open_time) AS first FROM candles WHERE symbol = 'BTCUSDT'"
    before = CliRunner().invoke(main, ["sql", sql, "--format", "json"])
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)[0] == {"n": real.height, "first": int(real["open_time"][0])}
    missing = CliRunner().invoke(main, ["sql", "SELECT * FROM daily_pnl"])
    assert missing.exit_code == 2 and "xcoin analytics build" in missing.output
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    assert CliRunner().invoke(main, ["analytics", "build"]).exit_code == 0
    both = CliRunner().invoke(main, ["sql", "SELECT (SELECT count(*) FROM candles) AS candles, "
                                     "(SELECT count(*) FROM candle_days WHERE source = 'file') AS days, "
                                     "(SELECT count(*) FROM strategy_performance) AS strategies", "--format", "json"])  # fmt: skip
    assert both.exit_code == 0, both.output
    assert json.loads(both.stdout)[0] == {"candles": real.height, "days": 3, "strategies": 0}
