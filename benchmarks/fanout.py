"""Fan-out of one signal to N subscribers: candle close → last order acknowledged.

For N = 10, 100, 1000, 5000 subscribers (each with their own simulator account and keys), the real
coordinator (`run_candle_close`: claim, candles from the exchange, the user strategy in its
sandbox, plan + intents, async fan-out, record, spot take profits) runs several candle closes,
alternating LONG (market entry, then a resting take profit: 2 orders per subscriber) and EXIT
(cancel the take profit, market exit: 2 requests per subscriber). Reported per N: p50/p95 of
the whole candle (close → last acknowledgement) and of the fan-out part, orders/s, and the seed
design in the same run: 3 orders × 100 ms global delay × N (computed; for N ≤ 100 also measured
with a sequential implementation of it, to show the figure is real).

The simulator replays real BTCUSDT 1m candles (../shared/data) in its own process, rate limits off: the published limits are per API
key (16 req/s) and each subscriber sends ≤ 3 requests, so they would not bind; the client keeps
its per-key limiter on. Store: Postgres when XCOIN_TEST_POSTGRES_URL is set (`. /tmp/xcoin/dev.env`),
otherwise SQLite. Locks and registry are in-process (one SET NX per strategy in Redis is noise).

`--launch` also times a real Dagster launch of `live_execution_job` through a local instance
(queued run coordinator + daemon, dagster.example.yaml): submit → run start → step start → end.
`--sensor` times a run the daemon's `candle_close_sensor` launches by itself, from the candle's close.

    .venv/bin/python benchmarks/fanout.py            # N = 10, 100, 1000, 5000
    .venv/bin/python benchmarks/fanout.py --quick    # N ≤ 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.live_world import (  # noqa: E402
    SEED_DELAY,
    SEED_ORDERS,
    START,
    drop_store,
    fresh_store,
    percentile,
    ready_admin,
    replay_simulator,
    seed,
)


def run_candles(url: str, admin, n: int, candles: int, profile: str | None, sim_cpu=lambda: 0.0) -> dict:
    import sqlalchemy as sa

    from xcoin_trading.live import fanout
    from xcoin_trading.live.coordinator import LiveContext, run_candle_close
    from xcoin_trading.live.locks import LocalLocks
    from xcoin_trading.live.registry import StoreRegistry
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order, Strategy, StrategyExecution
    from xcoin_trading.vault import Vault

    settings = fresh_store(str(n))
    try:
        t = time.perf_counter()
        strategy_id, _ = seed(settings, admin, n)
        seed_s = time.perf_counter() - t
        ctx = LiveContext(settings=settings, api_url=url, public_url=url, locks=LocalLocks(),
                          registry=StoreRegistry(ttl_seconds=0), vault=Vault.from_settings(settings))  # fmt: skip
        fan_times: list[float] = []
        original = fanout.fan_out

        def timed_fan_out(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                fan_times.append(time.perf_counter() - t0)

        fanout.fan_out = timed_fan_out
        totals, orders, served, client_cpu, server_cpu = [], 0, [], [], []
        base = datetime.fromtimestamp(admin.now_ms() // 60_000 * 60 + 60, UTC)  # the clock only moves forward
        profiler = None
        try:
            for i in range(candles):
                action = "LONG" if i % 2 == 0 else "EXIT"
                with session_scope(settings) as session:
                    session.get(Strategy, strategy_id).params = {"action": action}
                close = base + timedelta(minutes=i)
                admin.advance(to_ms=int(close.timestamp() * 1000))
                if profile and i == candles - 2:  # a LONG candle when candles is odd... either kind is fine
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                t0, cpu0, sim0 = time.perf_counter(), time.process_time(), sim_cpu()
                [report] = run_candle_close(ctx, "BTCUSDT", "1m", close, now=close + timedelta(seconds=1))
                totals.append(time.perf_counter() - t0)
                client_cpu.append(time.process_time() - cpu0)
                server_cpu.append(sim_cpu() - sim0)
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(profile)
                    profiler = None
                with session_scope(settings) as session:
                    acked = session.scalar(
                        sa.select(sa.func.count())
                        .select_from(Order)
                        .where(
                            Order.execution_id == report.execution_id, Order.exchange_order_id.is_not(None)
                        )
                    )
                ok = sum(1 for o in report.outcomes.values() if o["status"] in ("PLACED", "CLOSED"))
                if report.status != "COMPLETED" or ok != n:
                    raise SystemExit(
                        f"N={n} candle {i} {action}: {report.status} {ok}/{n} served: {report.error}"
                    )
                orders += acked
                served.append(ok)
                with session_scope(settings) as session:
                    row = session.get(StrategyExecution, report.execution_id)
                    phases = ", ".join(
                        f"{k[:-3]} {v} ms" for k, v in (row.details or {}).get("timings", {}).items()
                    )
                print(f"  N={n} candle {i} {action}: {totals[-1]:.2f} s ({phases})", file=sys.stderr)
        finally:
            fanout.fan_out = original
        return {
            "n": n, "candles": candles, "seed_s": seed_s, "orders": orders,
            "p50": statistics.median(totals), "p95": percentile(totals, 0.95),
            "fan_p50": statistics.median(fan_times), "fan_p95": percentile(fan_times, 0.95),
            "orders_per_s": orders / sum(fan_times),
            "client_cpu": statistics.median(client_cpu), "server_cpu": statistics.median(server_cpu),
        }  # fmt: skip
    finally:
        drop_store(settings)


def seed_sequential(url: str, admin, n: int) -> float:
    """The seed design, measured: per subscriber, 3 orders each after a global 100 ms sleep."""
    from xcoin_trading.exchange.client import CoinDCXClient, Credentials
    from xcoin_trading.exchange.ratelimit import RateLimiter

    creds = [Credentials(f"seq-{uuid.uuid4().hex[:16]}", uuid.uuid4().hex) for _ in range(n)]
    admin.add_accounts(
        [
            {"api_key": c.api_key, "api_secret": c.api_secret, "balances": {"USDT": "10000", "BTC": "1"}}
            for c in creds
        ]
    )
    with CoinDCXClient(url, url, rate_limiter=RateLimiter.disabled()) as base:
        price = next(t.last_price for t in base.ticker() if t.market == "BTCUSDT")
        t0 = time.perf_counter()
        for c in creds:
            client = base.with_credentials(c)
            legs = [("buy", "market_order", None),  # entry, then stop loss and take profit as resting sells
                    ("sell", "limit_order", (price * Decimal("1.04")).quantize(Decimal("0.01"))),
                    ("sell", "limit_order", (price * Decimal("1.08")).quantize(Decimal("0.01")))]  # fmt: skip
            for side, kind, limit in legs:
                time.sleep(SEED_DELAY)
                client.create_order("BTCUSDT", side, kind, "0.0002", limit)
        return time.perf_counter() - t0


@contextmanager
def dagster_daemon(url: str, store, before_daemon: list[str] | None = None):
    """A local Dagster instance (dagster.example.yaml) with its daemon running on workspace.yaml;
    yields (env, bin dir, project root). `before_daemon`: a dagster CLI command run first."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    home = Path(tempfile.mkdtemp(prefix="xcoin-dagster-"))
    shutil.copy(root / "xcoin_pipelines/defs/live/dagster.example.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "COINDCX_API_URL": url, "COINDCX_PUBLIC_URL": url}
    bin_dir = Path(sys.executable).parent
    if before_daemon:
        subprocess.run([str(bin_dir / "dagster"), *before_daemon, "-w", "workspace.yaml"], cwd=root, env=env,
                       check=True, capture_output=True, timeout=180)  # fmt: skip
    daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield env, bin_dir, root
    finally:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
        os.environ.pop("DAGSTER_HOME", None)
        shutil.rmtree(home, ignore_errors=True)
        drop_store(store)


def run_events(instance, run_id: str, since: float) -> dict[str, float]:
    """Seconds from `since` to each run/step event's first occurrence, by event name."""
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        kind = (
            entry.dagster_event.event_type.name if entry.dagster_event else None
        )  # RUN_START is "PIPELINE_START"
        if kind in ("RUN_STARTING", "RUN_START", "STEP_START", "STEP_SUCCESS", "RUN_SUCCESS", "RUN_FAILURE"):
            out.setdefault(kind, entry.timestamp - since)
    return out


def dagster_launch(url: str) -> dict | None:
    """A real queued launch of live_execution_job from the CLI, timed from the call."""
    import json
    import subprocess

    import dagster as dg

    store = fresh_store("launch")  # empty: the run measures Dagster's overhead, not the fan-out above
    with dagster_daemon(url, store) as (env, bin_dir, root):
        close = START + timedelta(hours=2)
        config = {"ops": {"live_candle_close": {"config": {
            "symbol": "BTCUSDT", "resolution": "1m", "close_time": close.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "now": (close + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}}}}  # fmt: skip
        time.sleep(8)  # the daemon and its code server start
        submitted = time.time()
        subprocess.run(
            [str(bin_dir / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "live_execution_job",
             "--config-json", json.dumps(config)],
            cwd=root, env=env, check=True, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        launched = time.time()
        instance = dg.DagsterInstance.get()
        try:
            deadline = time.time() + 180
            while time.time() < deadline:
                runs = instance.get_runs(limit=1)
                if runs and runs[0].is_finished:
                    break
                time.sleep(0.5)
            else:
                return None
            return {"status": runs[0].status.value, "cli_submit": launched - submitted,
                    **run_events(instance, runs[0].run_id, submitted)}  # fmt: skip
        finally:
            instance.dispose()


def dagster_sensor_run(url: str, admin) -> dict | None:
    """A run the daemon's own `candle_close_sensor` launches (the production trigger), timed from the
    candle's close. One strategy with one subscriber makes BTCUSDT:1m an active candle key. The
    simulator replays 2024, so the run finds no candle at today's close and records a clean failure:
    this measures Dagster's part only."""
    import dagster as dg

    store = fresh_store("sensor")
    seed(store, admin, 1)
    with dagster_daemon(url, store, before_daemon=["sensor", "start", "candle_close_sensor"]):
        instance = dg.DagsterInstance.get()
        try:
            # The sensor's first evaluation runs the latest closed candle at once (whenever the daemon
            # starts); the candle after it is the one measured: it closes while everything runs.
            deadline = time.time() + 300
            while time.time() < deadline:
                records = sorted(instance.get_run_records(filters=dg.RunsFilter(job_name="live_execution_job")),
                                 key=lambda r: r.create_timestamp)  # fmt: skip
                if len(records) >= 2 and records[1].dagster_run.is_finished:
                    break
                time.sleep(1)
            else:
                return None
            record = records[1]
            run = record.dagster_run
            close_time = run.run_config["ops"]["live_candle_close"]["config"]["close_time"]
            close = datetime.fromisoformat(close_time.replace("Z", "+00:00")).timestamp()
            return {"status": run.status.value, "RUN_CREATED": record.create_timestamp.timestamp() - close,
                    **run_events(instance, run.run_id, close)}  # fmt: skip
        finally:
            instance.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N ≤ 100 only")
    parser.add_argument("--sizes", type=int, nargs="*", help="subscriber counts (default 10 100 1000 5000)")
    parser.add_argument("--candles", type=int, default=None, help="candles per size (default by size)")
    parser.add_argument("--launch", action="store_true", help="also time a real queued Dagster launch")
    parser.add_argument(
        "--sensor", action="store_true", help="also time a run the candle-close sensor launches"
    )
    parser.add_argument("--profile", help="write cProfile stats of the largest size's last candle here")
    args = parser.parse_args()
    sizes = args.sizes or ([10, 100] if args.quick else [10, 100, 1000, 5000])
    sim = replay_simulator()
    from xcoin_trading.exchange.simulator import SimulatorAdmin

    rows, measured_seed, launch, sensor_run = [], {}, None, None
    store = "Postgres" if os.environ.get("XCOIN_TEST_POSTGRES_URL") else "SQLite"
    try:
        with ready_admin(sim, timeout=120) as admin:
            for n in sizes:
                candles = args.candles or (6 if n <= 100 else 4 if n <= 1000 else 2)
                profile = args.profile if n == max(sizes) else None
                rows.append(run_candles(sim.url, admin, n, candles, profile, sim.cpu_seconds))
                print(f"N={n}: done ({rows[-1]['p50']:.2f} s p50)", file=sys.stderr)
            for n in (s for s in sizes if s <= 100):
                measured_seed[n] = seed_sequential(sim.url, admin, n)
        if args.launch:
            launch = dagster_launch(sim.url)
        if args.sensor:
            with SimulatorAdmin(sim.url, timeout=120) as admin:
                sensor_run = dagster_sensor_run(sim.url, admin)
    finally:
        sim.stop()

    print(f"\nFan-out of one signal: candle close → last order acknowledged ({store} store, simulator in its own "
          f"process, rate limits off, {os.cpu_count()} cores)\n")  # fmt: skip
    head = (f"{'N':>5} {'candles':>7} {'orders':>7} {'close→last ack p50':>19} {'p95':>7} {'fan-out p50':>12} "
            f"{'p95':>7} {'orders/s':>9} {'client CPU':>10} {'sim CPU':>8} {'seed design':>12} {'seed measured':>14} {'speed-up':>9}")  # fmt: skip
    print(head)
    for r in rows:
        seed_s = SEED_ORDERS * SEED_DELAY * r["n"]
        meas = f"{measured_seed[r['n']]:.1f} s" if r["n"] in measured_seed else "-"
        print(f"{r['n']:>5} {r['candles']:>7} {r['orders']:>7} {r['p50']:>17.2f} s {r['p95']:>5.2f} s "
              f"{r['fan_p50']:>10.2f} s {r['fan_p95']:>5.2f} s {r['orders_per_s']:>9.0f} {r['client_cpu']:>8.2f} s "
              f"{r['server_cpu']:>6.2f} s {seed_s:>10.1f} s "
              f"{meas:>14} {seed_s / r['p50']:>8.0f}x")  # fmt: skip
    print(
        "\nclose→last ack: the whole coordinator (claim, candles from the exchange, strategy in its sandbox, "
        "plan + intents, fan-out, record, take profits); fan-out: from the signal to the last answer recorded."
    )
    print(
        f"seed design: {SEED_ORDERS} orders × {SEED_DELAY * 1000:.0f} ms global delay × N (computed); "
        "'seed measured' runs that loop for real. Targets: N=1000 ≤ 2 s, N=5000 ≤ 10 s."
    )
    dagster_parts = (
        (args.launch, launch, "Dagster launch (queued coordinator + daemon, dequeue every 1 s, in-process "
         "executor), seconds after `dagster job launch` was called", "the run did not finish within 180 s"),
        (args.sensor, sensor_run, "Sensor-launched run (daemon, candle_close_sensor every 5 s, queued "
         "coordinator), seconds after the candle closed", "no run finished within 300 s"),
    )  # fmt: skip
    for asked, measured, title, missing in dagster_parts:
        if asked:
            print(f"\n{title}:" if measured else f"\n{title}: {missing}")
            for key, value in (measured or {}).items():
                print(f"  {key:<14} {value if isinstance(value, str) else f'{value:.2f} s'}")


if __name__ == "__main__":
    main()
