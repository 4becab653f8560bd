"""Strategy sandbox benchmark: per-call time of one sandboxed strategy at 200 candles (a live lookback)
and 44,640 candles (a month of 1m), before (the unshare + setpriv sandbox of commit 932a2ee, loaded
from git) and after (bubblewrap, own uid, cgroups, pipes), and 10 strategies on one candle.

    .venv/bin/python benchmarks/sandbox.py              # 15 calls per case
    .venv/bin/python benchmarks/sandbox.py --calls 40

The strategy is a one-line rolling mean: the call time is the sandbox's overhead (start, imports,
job in, answer out, checks). "after, cold" starts each sandbox at the call; "after, spare" takes a
sandbox started ahead (as the live coordinator does while it fetches candles). The machine's load
is printed: on a shared host the figures move with it. Needs root + bwrap for the isolated paths.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BEFORE_COMMIT = "932a2ee"

STRATEGY = """
import polars as pl
def signals(candles, params):
    up = pl.col("close") > pl.col("close").rolling_mean(20)
    return candles.select(
        pl.when(up).then(pl.lit("LONG")).otherwise(pl.lit("HOLD")).alias("action"),
        (pl.col("close") * 0.98).alias("stop_loss"),
        (pl.col("close") * 1.04).alias("take_profit"),
    )
"""


def _before_module(folder: Path):
    """The pre-issue-13 sandbox, its module and child written from git into `folder`."""
    for name in ("sandbox.py", "_sandbox_child.py"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:xcoin_trading/strategy/{name}"],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
        (folder / name).write_text(text)
    spec = importlib.util.spec_from_file_location("sandbox_before", folder / "sandbox.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sandbox_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_cgroup_cpu_ms = [0.0]


def _count(run):
    """Adds a bubblewrap run's CPU (its cgroup's cpuacct: its pid namespace is not reaped by us)."""
    _cgroup_cpu_ms[0] += run.cpu_ms or 0.0
    return run


def _children_cpu() -> float:
    """CPU seconds of the sandboxes so far: waited-for children (user + sys) plus cgroup-counted runs."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime + _cgroup_cpu_ms[0] / 1000


def _times(fn, calls: int) -> tuple[list[float], float]:
    """Wall ms per call, and the sandboxes' CPU ms per call (independent of the host's load)."""
    fn()  # warm the parent (imports, first polars calls)
    out = []
    cpu = _children_cpu()
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out, (_children_cpu() - cpu) * 1000 / calls


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=15)
    args = parser.parse_args()

    from xcoin_trading.strategy import sandbox
    from xcoin_trading.strategy.validation import sample_candles

    print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start (shared machine)")
    print(f"isolation: {sandbox.isolation_mode()}, cgroups: {sandbox.cgroups_available()}")
    frames = {200: sample_candles(200, seed=1), 44_640: sample_candles(44_640, seed=1)}
    limits = sandbox.SandboxLimits()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # the old child runs as `nobody` from here
        before = _before_module(Path(tmp))
        for n, candles in frames.items():
            cases = {
                "before (unshare+setpriv)": lambda c=candles: before.run_sandboxed("b", STRATEGY, c, {}),
                "after, cold": lambda c=candles: _count(sandbox.run_sandboxed("a", STRATEGY, c, {}, limits)),
            }
            if hasattr(sandbox, "prewarm"):

                def warm(c=candles):
                    sandbox.prewarm(limits, 1)
                    time.sleep(0.3)  # the coordinator's candle fetch and claims, overlapping the start
                    t = time.perf_counter()
                    _count(sandbox.run_sandboxed("a", STRATEGY, c, {}, limits))
                    return time.perf_counter() - t

                cases["after, spare"] = warm
            for name, fn in cases.items():
                if name == "after, spare":
                    fn()
                    cpu = _children_cpu()
                    ms = [fn() * 1000 for _ in range(args.calls)]
                    cpu_ms = (_children_cpu() - cpu) * 1000 / args.calls
                else:
                    ms, cpu_ms = _times(fn, args.calls)
                rows.append((n, name, statistics.median(ms), _pct(ms, 95), cpu_ms))
        print(
            f"\nper call, {args.calls} calls each (ms; sandbox CPU = its processes' user+sys, load-independent)"
        )
        print(f"{'candles':>8}  {'sandbox':<26} {'p50':>8} {'p95':>8} {'sandbox CPU':>12}")
        for n, name, p50, p95, cpu_ms in rows:
            print(f"{n:>8}  {name:<26} {p50:8.0f} {p95:8.0f} {cpu_ms:12.0f}")

        candles = frames[200]
        print("\n10 strategies on one candle, wall time (s)")
        t = time.perf_counter()
        for _ in range(10):
            before.run_sandboxed("b", STRATEGY, candles, {})
        print(f"  before: one after another{'':<32}{time.perf_counter() - t:6.2f}")

        def ten(pool: int, spares: str) -> float:
            if spares == "before the close":  # a run launched ahead of its candle (PRELAUNCH_MS)
                sandbox.prewarm(limits, 10)
                time.sleep(3)  # of the ~20 s it waits for the close: the spares finish loading
            t = time.perf_counter()
            if spares == "at the candle":  # what the coordinator does before its claims and candle fetches
                sandbox.prewarm(limits, pool)
            with ThreadPoolExecutor(pool) as ex:
                list(
                    ex.map(lambda i: sandbox.run_sandboxed(f"s{i}", STRATEGY, candles, {}, limits), range(10))
                )
            return time.perf_counter() - t

        for pool, spares in ((8, ""), (10, ""), (8, "at the candle"), (8, "before the close")):
            walls = sorted(ten(pool, spares) for _ in range(3))
            how = f"spares started {spares}" if spares else "cold"
            print(
                f"  after: pool of {pool:<2}, {how:<32} median of 3: {walls[1]:5.2f}  (best {walls[0]:.2f})"
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
