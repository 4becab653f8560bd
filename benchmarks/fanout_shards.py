"""Sharded fan-out: one process vs N shard processes, candle close → last acknowledgement recorded.

For each N subscribers (default 10,000 and 20,000; each its own simulator account and keys) and each
mode (1 process: `run_candle_close`; S shards: `run_candle_shard` k of S, each in its own process),
candles alternate LONG (market entry + resting take profit per subscriber) and EXIT (take profit
cancelled + market exit). Worker processes are started and warm (imports, a store connection) before
the candle "closes" — as a prelaunched Dagster run's steps are, and read their accounts' balances
ahead as those do (`prepare_candle`; see docs/scaling.md); the clock runs
from the moment they are told to go to the last worker's return (every answer recorded).

Reported per (N, mode, candle kind): wall seconds, orders acknowledged, orders/s, Postgres rows
written per second (pg_stat_database inserts + updates of the benchmark's database over the candle),
client CPU seconds (all workers), the simulator's and Postgres' CPU seconds (every process named
postgres on the host: run nothing else on that server meanwhile), and the load average: the machine
is shared, so every figure says what else ran.

The simulator replays real BTCUSDT 1m candles (../shared/data) in its own process, rate limits off
(CoinDCX's are per API key and each subscriber sends ≤ 2 orders a candle). Store: a fresh Postgres
database on XCOIN_TEST_POSTGRES_URL's server (required).

    XCOIN_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:55432/postgres \\
        .venv/bin/python benchmarks/fanout_shards.py [--sizes 10000 20000] [--shards 2] [--candles 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.live_world import (  # noqa: E402
    drop_store,
    fresh_store,
    postgres_cpu,
    ready_admin,
    replay_simulator,
    seed,
)

TARGET = "N=10,000 ≤ 5 s close → last ack recorded"


def worker(api_url: str, close_iso: str, shard: int, shards: int) -> None:
    """One warm process: waits for "go" on stdin, runs its part of the candle, prints a JSON line."""
    import sqlalchemy as sa

    from xcoin_trading.config import get_settings
    from xcoin_trading.live.coordinator import LiveContext, prepare_candle, run_candle_close
    from xcoin_trading.live.locks import LocalLocks
    from xcoin_trading.live.registry import StoreRegistry
    from xcoin_trading.live.shards import prepare_shard, run_candle_shard
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.vault import Vault

    settings = get_settings()
    # Locks in-process: two shard processes both try the execution; its row decides who runs the strategy.
    ctx = LiveContext(settings=settings, api_url=api_url, public_url=api_url, locks=LocalLocks(),
                      registry=StoreRegistry(ttl_seconds=0), vault=Vault.from_settings(settings))  # fmt: skip
    with session_scope(settings) as session:
        session.execute(sa.text("SELECT 1"))
    close = datetime.fromisoformat(close_iso)
    # What a prelaunched run does while it waits for the close (sandboxes, balances read ahead).
    if shards == 1:
        prepare_candle(ctx, "BTCUSDT", "1m")
    else:
        prepare_shard(ctx, "BTCUSDT", "1m", shard, shards)
    print("ready", flush=True)
    sys.stdin.readline()
    collected = {"count": 0, "seconds": 0.0, "since": 0.0}

    def collector(phase: str, _info: dict) -> None:  # the cyclic GC's CPU share of the candle
        if phase == "start":
            collected["since"] = time.process_time()
        else:
            collected["count"] += 1
            collected["seconds"] += time.process_time() - collected["since"]

    gc.callbacks.append(collector)
    started, cpu = time.time(), time.process_time()
    now = close + timedelta(seconds=1)
    profile_dir = os.environ.get("XCOIN_BENCH_PROFILE")
    if profile_dir:  # where the client's CPU goes: one cProfile file per worker and candle
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    if shards == 1:
        reports = run_candle_close(ctx, "BTCUSDT", "1m", close, now=now)
    else:
        reports = run_candle_shard(ctx, "BTCUSDT", "1m", close, shard, shards, now=now)
    ended = time.time()
    gc.callbacks.remove(collector)
    if profile_dir:
        profiler.disable()
        profiler.dump_stats(Path(profile_dir) / f"{close:%H%M}-{shard}of{shards}.prof")
    from collections import Counter

    summary = [{"status": r.status, "execution_status": getattr(r, "execution_status", r.status),
                "served": sum(1 for o in r.outcomes.values() if o["status"] in ("PLACED", "CLOSED")),
                "outcomes": dict(Counter(o["status"] for o in r.outcomes.values())), "error": r.error,
                "reasons": sorted({str(o.get("reason"))[:120] for o in r.outcomes.values()
                                   if o["status"] not in ("PLACED", "CLOSED")})[:3]} for r in reports]  # fmt: skip
    print(
        json.dumps({"started": started, "ended": ended, "cpu": time.process_time() - cpu, "reports": summary,
                    "gc": [collected["count"], collected["seconds"]]})
    )  # fmt: skip


def _rows_written(settings) -> int:
    """Rows inserted + updated in the store's database so far (Postgres' cumulative statistics)."""
    import sqlalchemy as sa

    from xcoin_trading.store.db import get_engine

    with get_engine(settings).connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return int(
            conn.execute(
                sa.text(
                    "SELECT tup_inserted + tup_updated FROM pg_stat_database WHERE datname = current_database()"
                )
            ).scalar()
        )


def run_candle(settings, url: str, admin, strategy_id: int, n: int, close: datetime, action: str,
               shards: int, sim_cpu) -> dict:  # fmt: skip
    import sqlalchemy as sa

    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order, Strategy, StrategyExecution

    with session_scope(settings) as session:
        session.get(Strategy, strategy_id).params = {"action": action}
    admin.advance(to_ms=int(close.timestamp() * 1000))
    env = {
        **os.environ,
        "XCOIN_DATABASE_URL": settings.database_url_override,
        "XCOIN_HOME": str(settings.home),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, close.isoformat(), str(k), str(shards)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k in range(shards)
    ]
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"worker did not start: {line!r}")
    time.sleep(1.5)  # the statistics of the seed/last candle are flushed
    rows0, sim0, pg0, load = _rows_written(settings), sim_cpu(), postgres_cpu(), os.getloadavg()[0]
    go = time.time()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in procs]
    wall = max(r["ended"] for r in results) - go
    sim_used, pg_used = sim_cpu() - sim0, postgres_cpu() - pg0
    time.sleep(1.5)  # backends flush their statistics about once a second when idle
    rows = _rows_written(settings) - rows0
    reports = [rep for r in results for rep in r["reports"]]
    served = sum(rep["served"] for rep in reports)
    with session_scope(settings) as session:
        execution = session.scalar(
            sa.select(StrategyExecution).where(StrategyExecution.scheduled_at == close)
        )
        acked = session.scalar(
            sa.select(sa.func.count())
            .select_from(Order)
            .where(Order.execution_id == execution.id, Order.exchange_order_id.is_not(None))
        )
        status = execution.status
        timings = (execution.details or {}).get("timings", {})
    if status != "COMPLETED":
        raise SystemExit(f"N={n} {shards} shard(s) {action}: execution {status}: {reports}")
    if served != n:  # reported, not fatal: on a saturated host some answers time out (UNKNOWN)
        print(f"  N={n} {shards} shard(s) {action}: {served}/{n} served: {reports}", file=sys.stderr)
    gc_runs = [r["gc"] for r in results]
    print(f"  N={n} {shards} process(es) {action}: garbage collections per worker "
          f"{', '.join(f'{c} ({1000 * t:.0f} ms)' for c, t in gc_runs)}", file=sys.stderr)  # fmt: skip
    return {"served": served, "n": n, "shards": shards, "action": action, "wall": wall, "orders": acked, "rows": rows,
            "cpu": sum(r["cpu"] for r in results), "sim_cpu": sim_used, "pg_cpu": pg_used, "load": load, "timings": timings}  # fmt: skip


def phase_cpu(timings: dict, phase: str) -> int:
    """The fan-out thread's CPU ms in one phase (`<phase>_cpu_ms`), summed over the shards."""
    shards = [t for k, t in timings.items() if k.startswith("shard_")] or [timings]
    return sum(int(t.get(f"{phase}_cpu_ms", 0)) for t in shards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 20_000])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--candles", type=int, default=2, help="candles per mode (LONG, EXIT, LONG, ...)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, close_iso, shard, shards = args.worker
        worker(url, close_iso, int(shard), int(shards))
        return
    if not os.environ.get("XCOIN_TEST_POSTGRES_URL"):
        raise SystemExit("XCOIN_TEST_POSTGRES_URL must name a Postgres server: the rates measured are its")
    sim = replay_simulator()

    rows = []
    try:
        with ready_admin(sim, timeout=300) as admin:
            for n in args.sizes:
                settings = fresh_store(f"shards{n}")
                try:
                    t = time.perf_counter()
                    strategy_id, _ = seed(settings, admin, n)
                    print(f"N={n}: seeded in {time.perf_counter() - t:.1f} s", file=sys.stderr)
                    base = datetime.fromtimestamp(admin.now_ms() // 60_000 * 60 + 60, UTC)
                    i = 0
                    for shards in (1, args.shards):
                        for c in range(args.candles):
                            action = "LONG" if c % 2 == 0 else "EXIT"
                            close = base + timedelta(minutes=i)
                            i += 1
                            rows.append(run_candle(settings, sim.url, admin, strategy_id, n, close, action, shards,
                                                   sim.cpu_seconds))  # fmt: skip
                            r = rows[-1]
                            print(f"  N={n} {shards} process(es) {action}: {r['wall']:.2f} s, {r['orders']} orders, "
                                  f"{r['rows']} rows, load {r['load']:.1f}; phases ms {r['timings']}", file=sys.stderr)  # fmt: skip
                        if args.candles % 2:  # leave no position open for the next mode's LONG
                            raise SystemExit("--candles must be even (each LONG is closed by an EXIT)")
                finally:
                    drop_store(settings)
    finally:
        sim.stop()

    print(f"\nSharded fan-out: candle close → last ack recorded (Postgres store, simulator in its own process, "
          f"rate limits off, {os.cpu_count()} cores shared with other work)\n")  # fmt: skip
    print(f"{'N':>6} {'processes':>9} {'candle':>6} {'served':>6} {'wall s':>7} {'orders':>7} {'orders/s':>9} "
          f"{'PG rows':>8} {'PG rows/s':>9} {'client CPU s':>12} {'CPU ms/order':>12} {'plan/send/record CPU ms':>23} "
          f"{'sim CPU s':>9} {'PG CPU s':>8} {'load':>5} {'vs 1 proc':>9}")  # fmt: skip
    single = {(r["n"], r["action"]): r["wall"] for r in rows if r["shards"] == 1}
    for r in rows:
        ratio = single.get((r["n"], r["action"]), float("nan")) / r["wall"]
        print(f"{r['n']:>6} {r['shards']:>9} {r['action']:>6} {r['served']:>6} {r['wall']:>7.2f} {r['orders']:>7} "
              f"{r['orders'] / r['wall']:>9.0f} {r['rows']:>8} {r['rows'] / r['wall']:>9.0f} {r['cpu']:>12.2f} "
              f"{1000 * r['cpu'] / max(1, r['orders']):>12.2f} "
              f"{'/'.join(str(phase_cpu(r['timings'], p)) for p in ('plan', 'send', 'record')):>23} "
              f"{r['sim_cpu']:>9.2f} {r['pg_cpu']:>8.2f} {r['load']:>5.1f} {ratio:>8.2f}x")  # fmt: skip
    print(
        f"\nTarget: {TARGET}. 'vs 1 proc': the one-process wall time of the same N and candle kind / this one's."
    )
    print(
        "plan/send/record CPU ms: the fan-out threads' CPU in each phase (details.timings), summed over shards."
    )
    print(
        f"load: 1-minute load average when the candle started (os.getloadavg); now {os.getloadavg()[0]:.1f}."
    )


if __name__ == "__main__":
    main()
