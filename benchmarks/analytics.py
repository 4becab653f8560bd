"""Trade analytics benchmark: build every dbt_like_sql model over synthetic snapshots, then time three
ad-hoc queries on DuckDB against polars (lazy, same Parquet files) measured in the same run.

    .venv/bin/python benchmarks/analytics.py            # 1 M trades (quick)
    .venv/bin/python benchmarks/analytics.py --full     # 10 M trades, 10 k users, 100 strategies, 20 symbols, 1 year

Snapshots are generated directly as Parquet with the snapshot schema (DECIMAL(38,18) money, UTC
timestamps), skipping the store; generation time is reported apart. Targets: each query <= 1 s,
full build <= 30 s. Query times are the best of 3 runs and include fetching the whole result.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DUCK_TYPES = {"decimal128(38, 18)": "DECIMAL(38,18)", "timestamp[us, tz=UTC]": "TIMESTAMPTZ", "int64": "BIGINT",
              "bool": "BOOLEAN", "string": "VARCHAR"}  # fmt: skip
START = "TIMESTAMPTZ '2024-01-01 00:00:00+00'"
YEAR_S = 365 * 86400


def _columns(table: str, values: dict[str, str]) -> str:
    """Every snapshot column in order: the given expression, else a typed NULL."""
    from xcoin_trading.analytics.snapshot import arrow_schema

    out = []
    for f in arrow_schema(table):
        expr = values.get(f.name, f"NULL::{DUCK_TYPES[str(f.type)]}")
        out.append(f"CAST({expr} AS {DUCK_TYPES[str(f.type)]}) AS {f.name}")
    return ",\n".join(out)


def generate(folder: Path, trades: int, users: int, strategies: int, symbols: int) -> dict[str, int]:
    import duckdb

    subs = users * 3
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'; SELECT setseed(0.42)")
    ts = lambda col: f"{START} + to_seconds({col})"  # noqa: E731
    specs = {
        "users": (f"range(1, {users + 1}) r(id)", {"id": "id", "email": "'user' || id || '@bench.test'",
                  "name": "'user ' || id", "is_active": "true", "created_at": START, "updated_at": START}),
        "strategies": (f"range(1, {strategies + 1}) r(id)", {"id": "id", "name": "'strategy ' || id",
                       "code": "'s' || id", "author_id": "1 + id % 10", "version": "'1.0.0'",
                       "symbol": f"'SYM' || (id % {symbols})", "resolution": "'5m'", "lookback": "200",
                       "params": "'{}'", "tags": "'[]'", "is_active": "true", "is_public": "true",
                       "subscriber_count": str(subs // strategies), "validation_status": "'VALID'",
                       "created_at": START, "updated_at": START}),
        "subscriptions": (f"range(1, {subs + 1}) r(id)", {"id": "id", "user_id": "(id - 1) // 3 + 1",
                          "strategy_id": f"((id * 37) % {strategies}) + 1", "capital": "10000", "risk_per_trade": "0.01",
                          "leverage": "1", "max_positions": "1", "is_active": "id % 10 <> 0", "is_paused": "false",
                          "subscribed_at": START, "total_trades": "0", "winning_trades": "0", "losing_trades": "0",
                          "total_pnl": "0", "created_at": START, "updated_at": START}),
        "strategy_executions": (f"range(1, {strategies * 24 * 365 + 1}) r(id)", {"id": "id",
                                "strategy_id": f"(id % {strategies}) + 1", "interval_key": "'k' || id",
                                "scheduled_at": ts(f"(id // {strategies}) * 3600"),
                                "status": "CASE WHEN random() < 0.03 THEN 'FAILED' WHEN random() < 0.5 THEN 'NO_SIGNAL' ELSE 'COMPLETED' END",
                                "duration_ms": "(50 + random() * 2000)::BIGINT", "subscribers_count": "300",
                                "trades_created": "0", "error": "CASE WHEN random() < 0.5 THEN 'exchange timeout' ELSE 'bad key' END",
                                "created_at": START, "updated_at": START}),
    }  # fmt: skip
    counts = {}
    for table, (source, values) in specs.items():
        con.execute(
            f"COPY (SELECT {_columns(table, values)} FROM {source}) TO '{folder / table}.parquet' (FORMAT parquet)"
        )
    # trades: subscription -> user, strategy; symbol from the strategy; exact DECIMAL money, pnl net of fees
    con.execute(f"""CREATE TEMP TABLE t AS
        SELECT i AS id, sub AS subscription_id, (sub - 1) // 3 + 1 AS user_id, ((sub * 37) % {strategies}) + 1 AS strategy_id,
               CASE WHEN random() < 0.5 THEN 'LONG' ELSE 'SHORT' END AS side,
               CAST(round(0.001 + random() * 2, 4) AS DECIMAL(38,10)) AS qty,
               CAST(round(50 + random() * 1000, 2) AS DECIMAL(38,10)) AS entry,
               CAST(round(random() * {YEAR_S - 7200}) AS BIGINT) AS t0,
               random() < 0.98 AS closed, random() AS r
        FROM (SELECT i, 1 + CAST(floor(random() * {subs}) AS BIGINT) AS sub FROM range(1, {trades + 1}) r(i))""")
    con.execute("""CREATE TEMP TABLE t2 AS SELECT *, CAST(round(entry * (0.95 + r * 0.1), 2) AS DECIMAL(38,10)) AS exit_p,
                   CAST(round(entry * qty * 0.001, 8) AS DECIMAL(38,18)) AS entry_fee FROM t""")
    trade_values = {
        "id": "id", "subscription_id": "subscription_id", "strategy_id": "strategy_id", "user_id": "user_id",
        "execution_id": "NULL", "symbol": f"'SYM' || (strategy_id % {symbols})", "market_type": "'spot'", "side": "side",
        "quantity": "qty", "leverage": "1", "entry_price": "entry", "exit_price": "CASE WHEN closed THEN exit_p END",
        "status": "CASE WHEN closed THEN 'CLOSED' ELSE 'OPEN' END",
        "pnl": "CASE WHEN closed THEN (CASE side WHEN 'SHORT' THEN -1 ELSE 1 END) * (exit_p - entry) * qty - entry_fee - exit_fee END",
        "entry_fee": "entry_fee", "exit_fee": "exit_fee", "fees": "entry_fee + exit_fee",
        "entry_time": ts("t0"), "exit_time": f"CASE WHEN closed THEN {ts('t0 + 3600')} END",
        "exit_type": "CASE WHEN closed THEN 'SIGNAL' END", "flags": "'[]'", "created_at": ts("t0"), "updated_at": ts("t0 + 3600"),
    }  # fmt: skip
    con.execute(f"""COPY (SELECT {_columns("trades", trade_values)} FROM
                    (SELECT *, CASE WHEN closed THEN CAST(round(exit_p * qty * 0.001, 8) AS DECIMAL(38,18)) ELSE 0 END AS exit_fee FROM t2))
                    TO '{folder / "trades"}.parquet' (FORMAT parquet)""")
    order_values = {
        "id": "id", "subscription_id": "subscription_id", "trade_id": "trade_id", "leg": "leg",
        "client_order_id": "'xc-' || id", "market": "'SYM'", "side": "'buy'", "order_type": "'market_order'",
        "quantity": "qty", "filled_quantity": "qty", "avg_price": "price", "filled_notional": "qty * price", "fee": "fee", "status": "'FILLED'",
        "attempts": "1", "created_at": START, "updated_at": START,
    }  # fmt: skip
    con.execute(f"""COPY (SELECT {_columns("orders", order_values)} FROM (
                      SELECT 2 * id - 1 AS id, subscription_id, id AS trade_id, 'ENTRY' AS leg, qty, entry AS price, entry_fee AS fee FROM t2
                      UNION ALL
                      SELECT 2 * id, subscription_id, id, 'EXIT', qty, exit_p, CAST(round(exit_p * qty * 0.001, 8) AS DECIMAL(38,18))
                      FROM t2 WHERE closed))
                    TO '{folder / "orders"}.parquet' (FORMAT parquet)""")
    metrics = "'{\"sharpeRatio\": ' || round(random() * 3, 3) || ', \"totalTrades\": 100}'"
    con.execute(f"""COPY (SELECT {_columns("backtest_results", {"id": "id", "strategy_id": f"1 + id % {strategies}",
                    "strategy_code": f"'s' || (1 + id % {strategies})", "config": "'{}'", "metrics": metrics,
                    "artifacts": "'{}'", "execution_time_ms": "100", "created_at": START, "updated_at": START})}
                    FROM range(1, 1001) r(id)) TO '{folder / "backtest_results"}.parquet' (FORMAT parquet)""")  # fmt: skip
    for table in (
        "users",
        "strategies",
        "subscriptions",
        "strategy_executions",
        "trades",
        "orders",
        "backtest_results",
    ):
        counts[table] = con.execute(f"SELECT count(*) FROM '{folder / table}.parquet'").fetchone()[0]
    return counts


DUCK_QUERIES = {
    "daily P&L per user": (
        "SELECT user_id, day, sum(realized_pnl) AS pnl FROM daily_pnl GROUP BY user_id, day",
        "SELECT user_id, CAST(exit_time AS DATE) AS day, sum(pnl) AS pnl FROM trades WHERE status = 'CLOSED' GROUP BY ALL",
    ),
    "per-strategy win rate + profit factor": (
        """SELECT strategy_id, 100.0 * sum(wins) / sum(trades) AS win_rate, sum(gross_profit) / -sum(gross_loss) AS pf
           FROM strategy_performance GROUP BY strategy_id""",
        """SELECT strategy_id, 100.0 * count(*) FILTER (WHERE pnl > 0) / count(*) AS win_rate,
                  sum(pnl) FILTER (WHERE pnl > 0) / -sum(pnl) FILTER (WHERE pnl < 0) AS pf
           FROM trades WHERE status = 'CLOSED' GROUP BY strategy_id""",
    ),
    "top 100 users by P&L, last 7 days": (
        """SELECT user_id, sum(realized_pnl) AS pnl FROM daily_pnl
           WHERE day > (SELECT max(day) FROM daily_pnl) - 7 GROUP BY user_id ORDER BY pnl DESC LIMIT 100""",
        """SELECT user_id, sum(pnl) AS pnl FROM trades WHERE status = 'CLOSED'
             AND exit_time >= (SELECT CAST(max(exit_time) AS DATE) - 6 FROM trades WHERE status = 'CLOSED')
           GROUP BY user_id ORDER BY pnl DESC LIMIT 100""",
    ),
}


def polars_queries(trades_path: Path) -> dict:
    import polars as pl

    def trades():
        return pl.scan_parquet(trades_path).filter(pl.col("status") == "CLOSED")

    def daily():
        return (
            trades().group_by("user_id", pl.col("exit_time").dt.date().alias("day")).agg(pl.col("pnl").sum())
        )

    def strategy():
        pnl = pl.col("pnl")
        return (
            trades()
            .group_by("strategy_id")
            .agg(
                (100.0 * (pnl > 0).sum() / pl.len()).alias("win_rate"),
                (
                    pnl.filter(pnl > 0).sum().cast(pl.Float64) / -pnl.filter(pnl < 0).sum().cast(pl.Float64)
                ).alias("pf"),
            )
        )

    def top():
        t = trades()
        cutoff = t.select(pl.col("exit_time").max().dt.date() - pl.duration(days=6)).collect().item()
        return (
            t.filter(pl.col("exit_time").dt.date() >= cutoff)
            .group_by("user_id")
            .agg(pl.col("pnl").sum())
            .sort("pnl", descending=True)
            .head(100)
        )

    return dict(zip(DUCK_QUERIES, (daily, strategy, top), strict=True))


def best_of(fn, runs: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic trades (default 1 M)")
    parser.add_argument("--full", action="store_true", help="the issue's size: 10 M trades")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--strategies", type=int, default=100)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--home", type=Path, default=None, help="XCOIN_HOME to use (default: a temp dir)")
    args = parser.parse_args()
    rows = 10_000_000 if args.full else args.rows
    home = args.home or Path(tempfile.mkdtemp(prefix="xcoin-bench-analytics-"))
    os.environ["XCOIN_HOME"] = str(home)
    for var in ("XCOIN_DATABASE_URL", "XCOIN_LAKE_DIR"):
        os.environ.pop(var, None)

    from xcoin_trading.analytics.snapshot import snapshot_dir
    from xcoin_trading.analytics.warehouse import build_models, connect, run_data_tests
    from xcoin_trading.config import get_settings

    settings = get_settings()
    folder = snapshot_dir(settings)
    started = time.perf_counter()
    counts = generate(folder, rows, args.users, args.strategies, args.symbols)
    generation = time.perf_counter() - started
    print(
        f"generated in {generation:.1f} s under {home}: " + ", ".join(f"{t} {n:,}" for t, n in counts.items())
    )

    started = time.perf_counter()
    builds = build_models(settings)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    tests = run_data_tests(settings)
    tests_s = time.perf_counter() - started

    print(f"\nfull build of {len(builds)} models: {build_s:.2f} s (target <= 30 s)")
    print(f"{'model':<28}{'rows':>12}{'seconds':>10}")
    for b in builds:
        print(f"{b.name:<28}{b.rows:>12,}{b.seconds:>10.2f}")
    failed = [t.name for t in tests if not t.passed]
    print(f"{len(tests)} data tests in {tests_s:.2f} s; failing: {failed or 'none'}")

    peer = polars_queries(folder / "trades.parquet")
    print(
        f"\n{'query':<38}{'DuckDB model':>14}{'DuckDB raw':>12}{'polars raw':>12}{'polars/duck raw':>17}{'rows':>10}  agree"
    )
    with connect(settings) as con:
        for name, (on_model, on_raw) in DUCK_QUERIES.items():
            model_s, model_out = best_of(lambda q=on_model: con.sql(q).to_arrow_table())
            raw_s, raw_out = best_of(lambda q=on_raw: con.sql(q).to_arrow_table())
            polars_s, polars_out = best_of(lambda f=peer[name]: f().collect())
            agree = model_out.num_rows == raw_out.num_rows == polars_out.height
            flag = "" if max(model_s, raw_s) <= 1.0 else "  (over 1 s)"
            print(f"{name:<38}{model_s:>13.3f}s{raw_s:>11.3f}s{polars_s:>11.3f}s{polars_s / raw_s:>16.1f}x"
                  f"{model_out.num_rows:>10,}  {'yes' if agree else 'NO'}{flag}")  # fmt: skip


if __name__ == "__main__":
    main()
