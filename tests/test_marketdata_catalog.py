"""The DuckDB catalog: a `candles` view over the whole lake, read-only."""

from __future__ import annotations

import duckdb
import pytest

from xcoin_trading.config import get_settings
from xcoin_trading.marketdata.catalog import catalog_summary, connect_catalog, query, refresh_catalog
from xcoin_trading.marketdata.importer import import_candles


def test_the_view_sees_every_imported_candle_with_its_partition_columns(btc_1m_three_days):
    import_candles(btc_1m_three_days, "BTCUSDT", "1m")
    import_candles(btc_1m_three_days.head(1440), "ETHUSDT", "1m")  # values don't matter, only where they land
    info = refresh_catalog()
    assert info.path == get_settings().catalog_path and info.files == 4
    per_day = query(
        "SELECT symbol, resolution, CAST(date AS VARCHAR) d, count(*) n FROM candles GROUP BY ALL ORDER BY ALL"
    )
    assert per_day.rows() == [
        ("BTCUSDT", "1m", "2024-01-02", 1440),
        ("BTCUSDT", "1m", "2024-01-03", 1440),
        ("BTCUSDT", "1m", "2024-01-04", 1440),
        ("ETHUSDT", "1m", "2024-01-02", 1440),
    ]
    summary = catalog_summary().filter(symbol="BTCUSDT").row(0, named=True)
    assert (summary["days"], summary["rows"]) == (3, 4320)


def test_daily_ohlc_in_sql_matches_a_plain_loop(btc_1m_three_days):
    import_candles(btc_1m_three_days, "BTCUSDT", "1m")
    got = query(
        """
        SELECT CAST(date AS VARCHAR), arg_min(open, open_time), max(high), min(low), arg_max(close, open_time), sum(volume)
        FROM candles WHERE symbol = ? AND resolution = '1m' GROUP BY date ORDER BY date
        """,
        ["BTCUSDT"],
    ).rows()
    rows = btc_1m_three_days.rows()
    for i, day in enumerate(("2024-01-02", "2024-01-03", "2024-01-04")):
        chunk = rows[i * 1440 : (i + 1) * 1440]
        want = (day, chunk[0][1], max(r[2] for r in chunk), min(r[3] for r in chunk), chunk[-1][4])
        assert got[i][:5] == want
        assert got[i][5] == pytest.approx(sum(r[5] for r in chunk), rel=1e-12)


def test_new_days_appear_without_a_refresh_and_an_empty_catalog_heals_itself(btc_1m_three_days):
    refresh_catalog()  # built while the lake is empty
    assert query("SELECT count(*) FROM candles").item() == 0
    import_candles(btc_1m_three_days.head(1440), "BTCUSDT", "1m")
    assert query("SELECT count(*) FROM candles").item() == 1440
    import_candles(btc_1m_three_days.slice(1440), "BTCUSDT", "1m")
    assert query("SELECT count(*) FROM candles").item() == 4320


def test_the_catalog_never_writes(btc_1m_three_days):
    import_candles(btc_1m_three_days.head(1440), "BTCUSDT", "1m")
    with connect_catalog() as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("CREATE TABLE x AS SELECT 1")
