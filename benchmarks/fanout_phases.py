"""The fan-out's client CPU in its store phases, per subscriber: plan (size, limits, intents) and record
(answers written), of a LONG (market entry + take profit intent) and of an EXIT (cancel + exit).

No exchange: the answers are built like the simulator's, so only our code and the driver are timed
(CPU of the working thread, `time.thread_time`: waits are not ours, and the machine is shared), and
Postgres' CPU in the same phases (every postgres process on the host, from /proc: run nothing else
on that server meanwhile). Each round is one warm worker process planning and recording LONG then EXIT
candles over N subscribers on a fresh Postgres database, as `fan_out` calls them (one transaction
each). `--peer-tree DIR` runs a worker of another checkout (e.g. `git archive <commit>`) in
alternation with this one, each on its own database built by its own migrations (a schema change is
measured too): before/after side by side under the same load.

    XCOIN_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:55432/postgres \\
        .venv/bin/python benchmarks/fanout_phases.py [--n 2000] [--rounds 4] [--candles 3] [--peer-tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("XCOIN_BENCH_TREE", str(ROOT)))


def _live_world():
    """This checkout's benchmarks/live_world.py, also when a peer tree's packages come first."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("live_world", ROOT / "benchmarks" / "live_world.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


postgres_cpu = _live_world().postgres_cpu
PHASES = ("accounts", "long_plan", "long_record", "exit_plan", "exit_record")


def _answers(jobs, price, fee_pct):  # what the simulator answers: entries and exits fill, take profits rest
    from decimal import Decimal

    from xcoin_trading.exchange.models import Order as ExchangeOrder

    stamp = 1704067200000
    for n, job in enumerate(jobs):
        o = job.order
        resting = o.order_type == "limit_order"
        qty = float(o.quantity)
        job.result = ExchangeOrder.from_spot(json.loads(json.dumps({
            "id": f"00000000-0000-4000-8000-{n:012d}", "client_order_id": o.client_order_id, "market": o.market,
            "order_type": o.order_type, "side": o.side, "status": "open" if resting else "filled",
            "fee_amount": 0.0 if resting else round(qty * float(price) * 0.001, 8), "fee": fee_pct,
            "maker_fee": fee_pct, "taker_fee": fee_pct, "total_quantity": qty,
            "remaining_quantity": qty if resting else 0.0, "source": "api",
            "avg_price": 0.0 if resting else float(price), "price_per_unit": float(o.price or 0),
            "stop_price": 0.0, "time_in_force": "good_till_cancel", "created_at": stamp, "updated_at": stamp,
            "trades": None,
        }), parse_float=Decimal))  # as the client decodes replies: numbers as exact Decimals  # fmt: skip
        if job.cancel_first:
            job.cancelled_take_profit = True
    return Decimal(0)


def worker(candles: int, tag: str) -> None:
    """Plan and record `candles` LONG + EXIT pairs; print the thread CPU s of each phase per candle."""
    import sqlalchemy as sa

    import xcoin_trading.live.fanout as fanout
    from xcoin_trading.config import get_settings
    from xcoin_trading.exchange.catalog import default_market
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Strategy

    settings = get_settings()
    market = default_market("BTCUSDT")
    with session_scope(settings) as session:
        strategy_id = session.scalar(sa.select(Strategy.id))
    if strategy_id is None:
        raise SystemExit("the store has no strategy: seed it first")
    out: dict[str, list[float]] = {p: [] for p in PHASES} | {f"{p}_pg": [] for p in PHASES}
    profile_dir = os.environ.get("XCOIN_BENCH_PROFILE")
    if profile_dir:  # where the CPU goes (thread CPU clock, so waits on Postgres do not count)
        import cProfile

        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    for c in range(candles):
        for action in ("LONG", "EXIT"):
            with fanout._collector_paused():  # as fan_out runs them: no cyclic GC
                _candle(settings, strategy_id, market, action, f"{tag}-{c}", out)
    if profile_dir:
        profiler.disable()
        profiler.dump_stats(Path(profile_dir) / f"phases-{tag}.prof")
    print(json.dumps(out))


def _took(out: dict[str, list[float]], phase: str, thread_cpu: float, pg_cpu: float) -> None:
    out[phase].append(time.thread_time() - thread_cpu)
    out[f"{phase}_pg"].append(postgres_cpu() - pg_cpu)


def _candle(settings, strategy_id: int, market, action: str, tag: str, out: dict[str, list[float]]) -> None:
    """One candle's accounts read (LONG), plan and record, each in its own transaction as in fan_out."""
    from decimal import Decimal

    from xcoin_trading.live.context import LiveContext
    from xcoin_trading.live.fanout import FanoutResult, entry_credentials, mark_sending, plan, record
    from xcoin_trading.live.intents import PlanInput
    from xcoin_trading.live.locks import LocalLocks
    from xcoin_trading.live.registry import StoreRegistry
    from xcoin_trading.live.runner import Signal
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import StrategyExecution
    from xcoin_trading.vault import Vault

    price = Decimal("42000.5")
    close = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=1)
    with session_scope(settings) as session:
        execution = StrategyExecution(strategy_id=strategy_id, interval_key=f"{tag}-{action}", scheduled_at=close,
                                      status="RUNNING")  # fmt: skip
        session.add(execution)
        session.flush()
        execution_id = execution.id
    signal = Signal(action, price, price * Decimal("0.98"), price * Decimal("1.04"), 0)
    balances = None
    if action == "LONG":
        t, pg = time.thread_time(), postgres_cpu()
        ctx = LiveContext(settings=settings, api_url="", public_url="", locks=LocalLocks(),
                          registry=StoreRegistry(ttl_seconds=0), vault=Vault.from_settings(settings))  # fmt: skip
        credentials = entry_credentials(ctx, strategy_id)
        _took(out, "accounts", t, pg)
        balances = {c.id: Decimal(10000) for c in credentials}
    p = PlanInput(
        execution_id, strategy_id, signal, market, Decimal("0.001"), close, True, free_balances=balances
    )
    result = FanoutResult()
    t, pg = time.thread_time(), postgres_cpu()
    with session_scope(settings) as session:
        jobs = plan(session, p, result)
        mark_sending(session, jobs)
    _took(out, f"{action.lower()}_plan", t, pg)
    _answers(jobs, price, 0.1)
    t, pg = time.thread_time(), postgres_cpu()
    with session_scope(settings) as session:
        record(session, jobs, close, result)
    _took(out, f"{action.lower()}_record", t, pg)
    served = sum(1 for o in result.outcomes.values() if o["status"] in ("PLACED", "CLOSED"))
    if served != len(result.outcomes):
        raise SystemExit(f"{action}: not all served: {list(result.outcomes.values())[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4, help="worker processes per tree, alternating")
    parser.add_argument("--candles", type=int, default=3, help="LONG + EXIT pairs per worker")
    parser.add_argument("--peer-tree", type=Path, help="another checkout: its code measured in alternation")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1])
        return
    if not os.environ.get("XCOIN_TEST_POSTGRES_URL"):
        raise SystemExit("XCOIN_TEST_POSTGRES_URL must name a Postgres server")
    import base64

    os.environ.setdefault("XCOIN_ENCRYPTION_KEY", "k1:" + base64.b64encode(os.urandom(32)).decode())
    for var in ("XCOIN_REDIS_URL", "COINDCX_API_URL", "COINDCX_PUBLIC_URL"):
        os.environ.pop(var, None)
    from benchmarks.live_world import drop_store, fresh_store, seed

    class NoExchange:
        def add_accounts(self, _accounts) -> None:
            pass

    trees = {"this": ROOT} | ({"peer": args.peer_tree.resolve()} if args.peer_tree else {})
    measured: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    stores = {}
    try:
        for name, tree in trees.items():  # each tree's own database, built by its own migrations
            stores[name] = fresh_store(f"phases{args.n}{name}", migrate_with=None if tree == ROOT else tree)
            seed(stores[name], NoExchange(), args.n)
        for r in range(args.rounds):
            for name, tree in trees.items() if r % 2 == 0 else reversed(trees.items()):
                env = {**os.environ, "XCOIN_DATABASE_URL": stores[name].database_url_override,
                       "XCOIN_HOME": str(stores[name].home), "XCOIN_BENCH_TREE": str(tree), "PYTHONPATH": str(tree)}  # fmt: skip
                run = subprocess.run(
                    [sys.executable, str(ROOT / "benchmarks" / "fanout_phases.py"), "--worker", str(args.candles),
                     f"{name}{r}"], env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                if run.returncode:
                    raise SystemExit(f"{name} worker failed:\n{run.stderr[-3000:]}")
                for phase, values in json.loads(run.stdout.strip().splitlines()[-1]).items():
                    # the first candle warms caches (statements, imports)
                    measured[name].setdefault(phase, []).extend(values[1:])
                print(f"round {r} {name}: done, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    finally:
        for settings in stores.values():
            drop_store(settings)
    print(f"\nFan-out store phases: CPU µs per subscriber (median over {args.rounds} workers × "
          f"{args.candles - 1} warm candles), N={args.n}, Postgres, load {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    for title, suffix in (("client thread CPU", ""), ("Postgres CPU", "_pg")):
        print(
            f"{title:<22}"
            + "".join(f"{name:>12}" for name in trees)
            + (f"{'this/peer':>11}" if len(trees) > 1 else "")
        )
        totals = dict.fromkeys(trees, 0.0)
        for phase in PHASES:
            med = {name: 1e6 * statistics.median(measured[name][phase + suffix]) / args.n for name in trees}
            for name in trees:
                totals[name] += med[name]
            ratio = f"{med['this'] / med['peer']:>10.2f}x" if len(trees) > 1 else ""
            print(f"  {phase:<20}" + "".join(f"{med[name]:>12.1f}" for name in trees) + ratio)
        ratio = f"{totals['this'] / totals['peer']:>10.2f}x" if len(trees) > 1 else ""
        print(f"  {'total':<20}" + "".join(f"{totals[name]:>12.1f}" for name in trees) + ratio + "\n")


if __name__ == "__main__":
    main()
