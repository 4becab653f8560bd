"""Market-data benchmark: import throughput, backfill time against the rate-limit bound, DuckDB queries.

    .venv/bin/python benchmarks/market_data.py          # default: full import, one month of backfill
    .venv/bin/python benchmarks/market_data.py --full   # one year of backfill (>= 33 s by the rate limit)

Peers measured in the same run: DuckDB's own hive-partitioned COPY for the import (no checks, no
atomic rename), the CoinDCX rate-limit bound for the backfill, and polars over the same Parquet
files for the queries. Runs in a temporary XCOIN_HOME; reads ../shared/data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
SOURCE = DATA / "BTCUSDT-1m-2023-04_2024-12.parquet"


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="backfill a whole year (2024) instead of January")
    parser.add_argument("--keep", action="store_true", help="keep the temporary XCOIN_HOME with the lake")
    args = parser.parse_args()
    if not SOURCE.exists():
        sys.exit(f"missing {SOURCE}")
    home = Path(tempfile.mkdtemp(prefix="xcoin-bench-"))
    os.environ["XCOIN_HOME"] = str(home)
    for var in ("XCOIN_LAKE_DIR", "COINDCX_API_URL", "COINDCX_PUBLIC_URL"):
        os.environ.pop(var, None)

    import duckdb
    import polars as pl

    from xcoin_trading.config import get_settings
    from xcoin_trading.exchange.client import CoinDCXClient
    from xcoin_trading.exchange.ratelimit import GENERAL_LIMITS
    from xcoin_trading.exchange.simulator.server import SimulatorServer
    from xcoin_trading.marketdata.backfill import backfill
    from xcoin_trading.marketdata.catalog import query, refresh_catalog
    from xcoin_trading.marketdata.importer import import_candles
    from xcoin_trading.marketdata.lake import candles_root, day_range
    from xcoin_trading.marketdata.resample import ohlcv_aggregation

    settings = get_settings()
    rows: list[tuple[str, str, str, str]] = []

    # 1. Import: the whole 21-month file, every day checked and atomically written.
    seconds, report = timed(lambda: import_candles(SOURCE, "BTCUSDT", "1m", settings=settings))
    assert not report.rejected, report.describe_rejections()
    n = report.rows_written
    peer_dir = home / "peer"
    con = duckdb.connect()
    peer_s, _ = timed(
        lambda: con.execute(
            f"COPY (SELECT epoch_ms(open_time) AS open_time, open, high, low, close, volume, "
            f"strftime(open_time, '%Y-%m-%d') AS date FROM read_parquet('{SOURCE}')) "
            f"TO '{peer_dir}' (FORMAT parquet, PARTITION_BY (date), OVERWRITE_OR_IGNORE)"
        )
    )
    rows.append(
        (
            f"import {SOURCE.name} ({n:,} rows, {len(report.written)} days)",
            f"{seconds:.2f} s = {n / seconds:,.0f} rows/s",
            f"duckdb COPY PARTITION_BY: {peer_s:.2f} s = {n / peer_s:,.0f} rows/s",
            f"{seconds / peer_s:.1f}x",
        )
    )

    # 2. Backfill from the simulator replaying the same candles, against the rate-limit bound.
    span = ("2024-01-01", "2024-12-31") if args.full else ("2024-01-01", "2024-01-31")
    days = day_range(*span)
    # Backfill into a fresh lake so nothing is served from the import above.
    os.environ["XCOIN_LAKE_DIR"] = str(home / "backfill-lake")
    from xcoin_trading.config import reset_settings

    reset_settings()
    bf_settings = get_settings()
    end_ms = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    with (
        SimulatorServer.from_replay(SOURCE, "BTCUSDT", start_ms=end_ms) as sim,
        CoinDCXClient(sim.url, sim.url) as client,
    ):
        bf_s, bf = timed(
            lambda: backfill(client, ["BTCUSDT"], ["1m"], days, settings=bf_settings, now_ms=end_ms)
        )
    assert not bf.failed, bf.describe_failures()
    per_second = min(limit.rate for limit in GENERAL_LIMITS)
    burst = min(limit.requests for limit in GENERAL_LIMITS)
    requests = bf.requests + 1  # + the markets lookup
    bound = max(0.0, requests - burst) / per_second
    ideal = -(-bf.rows_written // 1000)
    rows.append(
        (
            f"backfill {len(days)} days of 1m ({bf.rows_written:,} candles, {requests} requests; ideal {ideal}, day-by-day {2 * len(days)})",
            f"{bf_s:.2f} s",
            f"rate-limit bound ({per_second:.0f} req/s after a {burst} burst): {bound:.2f} s",
            f"{bf_s / bound:.2f}x" if bound else "n/a",
        )
    )

    # 3. Queries over the DuckDB `candles` view vs polars over the same files.
    refresh_catalog(settings)
    lake_glob = str(candles_root(settings) / "*" / "*" / "*.parquet")
    count_s, count = timed(lambda: query("SELECT count(*) FROM candles", settings=settings).item(), repeat=3)
    pl_count_s, pl_count = timed(
        lambda: pl.scan_parquet(lake_glob).select(pl.len()).collect().item(), repeat=3
    )
    assert count == pl_count == n
    rows.append(
        (
            "SELECT count(*) FROM candles",
            f"{count_s * 1000:.1f} ms",
            f"polars scan_parquet: {pl_count_s * 1000:.1f} ms",
            f"{count_s / pl_count_s:.2f}x",
        )
    )
    daily_sql = """
        SELECT date, arg_min(open, open_time) AS open, max(high) AS high, min(low) AS low,
               arg_max(close, open_time) AS close, sum(volume) AS volume
        FROM candles WHERE symbol = 'BTCUSDT' AND resolution = '1m' GROUP BY date ORDER BY date
    """
    ohlc_s, daily = timed(lambda: query(daily_sql, settings=settings), repeat=3)

    def polars_daily():
        return (
            pl.scan_parquet(lake_glob)
            .sort("open_time")
            .group_by((pl.col("open_time") // 86_400_000).alias("day"), maintain_order=True)
            .agg(*ohlcv_aggregation())
            .collect()
        )

    pl_ohlc_s, pl_daily = timed(polars_daily, repeat=3)
    assert daily.height == pl_daily.height == len(report.written)
    assert daily["close"].to_list() == pl_daily["close"].to_list()
    rows.append(
        (
            "daily OHLC resample over the view (641 days)",
            f"{ohlc_s * 1000:.1f} ms",
            f"polars: {pl_ohlc_s * 1000:.1f} ms",
            f"{ohlc_s / pl_ohlc_s:.2f}x",
        )
    )

    width = [max(len(r[i]) for r in rows + [("what", "xcoin", "peer", "ratio")]) for i in range(4)]
    line = " | ".join
    print(line(h.ljust(w) for h, w in zip(("what", "xcoin", "peer", "ratio"), width, strict=True)))
    print("-+-".join("-" * w for w in width))
    for r in rows:
        print(line(c.ljust(w) for c, w in zip(r, width, strict=True)))
    print(f"(cpu count {os.cpu_count()}; {'full' if args.full else 'default'} run)")
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
