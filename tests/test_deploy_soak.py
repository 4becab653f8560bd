"""The production profile under supervision, end to end: `xcoin deploy up` on one host (its own Postgres
and Redis, Dagster on Postgres, daemon, webserver, code server, API), the daemon's own sensors and
schedule trading a spot and a futures strategy against the simulator (its own process, real clock),
while a run worker is SIGKILLed and the daemon, Redis and Postgres are restarted. Then the books are
checked from outside: one execution per due candle, no duplicate or unresolved order, Σ P&L == ledger
per account, every run finished with its outcome recorded."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fixtures.live import build_world
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.exchange.simulator import SimulatorAdmin
from xcoin_trading.exchange.simulator.server import SimulatorProcess

pytestmark = pytest.mark.slow
IN_CI = os.environ.get("CI", "").lower() == "true"
XCOIN = str(Path(sys.executable).with_name("xcoin"))

# Even minutes enter, odd minutes exit: trades open and close every two candles on both markets.
ALTERNATING = """
import polars as pl
DEFAULT_PARAMS = {"entry": "LONG", "sl": 0.05, "tp": 0.05}
def signals(candles, params):
    side = -1.0 if params["entry"] == "SHORT" else 1.0
    even = ((pl.col("open_time") // 60_000) % 2) == 0  # open_time: epoch ms
    return candles.select(
        pl.when(even).then(pl.lit(params["entry"])).otherwise(pl.lit("EXIT")).alias("action"),
        (pl.col("close") * (1 - side * params["sl"])).alias("stop_loss"),
        (pl.col("close") * (1 + side * params["tp"])).alias("take_profit"),
    )
"""
RUN_SECONDS = 215  # the automation's window: ~3 candles per market around the faults


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _needs_host() -> None:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the local Postgres runs as `postgres`)")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        missing.append("PostgreSQL binaries")
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if missing:
        if IN_CI:
            pytest.fail("CI must provide " + ", ".join(missing))
        pytest.skip("production profile needs " + ", ".join(missing))


def _deploy(
    env_file: Path, deploy_dir: Path, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XCOIN_", "COINDCX_", "DAGSTER_"))}
    return subprocess.run(
        [XCOIN, "deploy", *args, "--env-file", str(env_file), "--dir", str(deploy_dir)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _run_worker_pids(deploy_dir: Path) -> list[int]:
    """Processes each running one Dagster run: the code server spawns one per launched run."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "spawn_main" not in cmd:
            continue
        try:
            parents = " ".join(" ".join(p.cmdline()) for p in proc.parents())
        except psutil.Error:
            continue
        if "code-server" in parents or "api grpc" in parents:
            pids.append(proc.pid)
    return pids


@pytest.fixture()
def profile(tmp_path, monkeypatch, master_key_env):
    _needs_host()
    sim = SimulatorProcess(["--seed", "5", "--no-rate-limits"]).start()
    pg_port, redis_port = _free_port(), _free_port()
    env_file = tmp_path / "deploy.env"
    values = {
        "XCOIN_DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{pg_port}/xcoin",
        "XCOIN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "XCOIN_ENCRYPTION_KEY": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
        "XCOIN_JWT_SECRET": secrets.token_hex(32),
        "XCOIN_LOCAL_SERVERS": "1",
        "XCOIN_API_PORT": str(_free_port()),
        "XCOIN_DAGSTER_PORT": str(_free_port()),
        "XCOIN_CODE_SERVER_PORT": str(_free_port()),
        "COINDCX_API_URL": sim.url,
        "COINDCX_PUBLIC_URL": sim.url,
    }
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env_file.chmod(0o600)
    # The local Postgres runs as `postgres`, which must traverse to its data (pytest's tmp is 0700).
    deploy_dir = Path(tempfile.mkdtemp(prefix="xcoin-deploy-", dir="/tmp")) / "deploy"
    deploy_dir.parent.chmod(0o711)
    try:
        started = _deploy(env_file, deploy_dir, "up")
        assert started.returncode == 0, started.stdout + started.stderr
        for name in ("XCOIN_DATABASE_URL", "XCOIN_REDIS_URL", "XCOIN_ENCRYPTION_KEY"):
            monkeypatch.setenv(name, values[name])
        monkeypatch.setenv("COINDCX_API_URL", sim.url)
        monkeypatch.setenv("COINDCX_PUBLIC_URL", sim.url)
        reset_settings()
        yield env_file, deploy_dir, sim, values
    finally:
        from xcoin_trading.store.db import dispose_engines

        dispose_engines()
        stopped = _deploy(env_file, deploy_dir, "down", timeout=120)
        sim.stop()
        # The services' logs outlive the run (CI keeps them as an artifact when something failed).
        artifacts = Path(os.environ.get("XCOIN_TEST_ARTIFACTS", tempfile.gettempdir())) / "deploy-soak-logs"
        shutil.rmtree(artifacts, ignore_errors=True)
        shutil.copytree(deploy_dir / "logs", artifacts, dirs_exist_ok=True)
        shutil.rmtree(deploy_dir.parent, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        leftovers = _run_worker_pids(deploy_dir) + [
            int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and str(deploy_dir).encode() in _cmdline(p)
        ]  # fmt: skip
        assert not leftovers, f"processes outlived `xcoin deploy down`: {leftovers}"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_production_profile_trades_through_kills_and_restarts_and_its_books_match_the_exchange(profile):
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order, StrategyExecution, Subscription, Trade

    env_file, deploy_dir, sim, values = profile
    settings = get_settings()
    spot = build_world(settings, sim, 3, source=ALTERNATING)
    futures = build_world(settings, sim, 2, symbol="B-BTC_USDT", source=ALTERNATING)
    with session_scope(settings) as session:
        from xcoin_trading.services import strategies
        from xcoin_trading.store.models import Strategy

        row = session.get(Strategy, futures.strategy_id)
        strategies.update_strategy(session, row.author_id, row.id, params={**row.params, "entry": "SHORT"})
        row.validation_status = "VALID"

    on = _deploy(env_file, deploy_dir, "automation", "on")
    assert on.returncode == 0 and on.stdout.count("RUNNING") == 3, on.stdout + on.stderr
    began = datetime.now(UTC)
    chaos = [(40, "kill a run worker"), (130, "restart dagster_daemon"), (150, "restart redis"),
             (170, "restart postgres")]  # fmt: skip
    done: list[str] = []
    killed_workers: list[int] = []
    while (elapsed := (datetime.now(UTC) - began).total_seconds()) < RUN_SECONDS:
        if not chaos or elapsed < chaos[0][0]:
            time.sleep(0.5)
            continue
        _, what = chaos.pop(0)
        if what == "kill a run worker":  # the next run that starts dies mid-way (a minute at most)
            while not killed_workers and (datetime.now(UTC) - began).total_seconds() < 110:
                killed_workers = _run_worker_pids(deploy_dir)
                time.sleep(0.05)
            time.sleep(0.5)  # inside the run, not at its first instruction
            for pid in killed_workers:
                os.kill(pid, signal.SIGKILL)
        else:
            restarted = _deploy(env_file, deploy_dir, *what.split())
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        done.append(what)
    off = _deploy(env_file, deploy_dir, "automation", "off")
    assert off.returncode == 0, off.stdout + off.stderr
    assert done == ["kill a run worker", "restart dagster_daemon", "restart redis", "restart postgres"]
    assert killed_workers, "no run worker was in flight to kill"

    # Let launched runs finish, then settle with reconciler passes (the schedule is off now).
    deadline = time.monotonic() + 90
    while _run_worker_pids(deploy_dir) and time.monotonic() < deadline:
        time.sleep(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XCOIN_", "COINDCX_"))}
    env.update({k: v for k, v in values.items()}, XCOIN_HOME=str(settings.home))
    for _ in range(3):
        settle = subprocess.run(
            [XCOIN, "reconcile", "--once"], env=env, capture_output=True, text=True, timeout=120
        )
        assert settle.returncode == 0, settle.stdout + settle.stderr

    status = _deploy(env_file, deploy_dir, "status")
    assert status.returncode == 0, status.stdout  # every service healthy after the restarts

    with session_scope(settings) as session:
        executions = session.scalars(sa.select(StrategyExecution)).all()
        orders = session.scalars(sa.select(Order)).all()
        trades = session.scalars(sa.select(Trade)).all()
        subs = {s.id: s for s in session.scalars(sa.select(Subscription)).all()}
        session.expunge_all()

    # One execution per (strategy, candle), each finished; every candle close in the window was run.
    per_candle = Counter((e.strategy_id, e.interval_key) for e in executions)
    assert max(per_candle.values()) == 1
    assert not [e for e in executions if e.status == "RUNNING"], [(e.id, e.interval_key) for e in executions]
    for world in (spot, futures):
        mine = sorted(e.interval_key for e in executions if e.strategy_id == world.strategy_id)
        assert len(mine) >= 3, mine
        minutes = [datetime.fromisoformat(k.split("_")[0].replace("Z", "+00:00")) for k in mine]
        gaps = [b - a for a, b in zip(minutes, minutes[1:], strict=False)]
        assert all(g.total_seconds() == 60 for g in gaps), f"a due candle was never run: {mine}"
    outcomes = sorted((e.interval_key, e.strategy_id, e.status, (e.error or "")[:120]) for e in executions)
    assert sum(e.status == "COMPLETED" for e in executions) >= 2, outcomes

    # Orders: none twice on the exchange, none unresolved, the store knows every exchange order.
    assert len({o.client_order_id for o in orders}) == len(orders)
    unresolved = [o.client_order_id for o in orders if o.status in ("INTENT", "SENDING", "UNKNOWN")]
    assert not unresolved, unresolved
    assert not [t.id for t in trades if t.status == "PENDING"]
    for world in (spot, futures):
        for sub_id, creds in world.keys.items():
            mine = [t for t in trades if t.subscription_id == sub_id]
            closed = [t for t in mine if t.status == "CLOSED"]
            realised = sum((t.pnl for t in closed), Decimal(0))
            sub = subs[sub_id]
            assert (sub.total_trades, sub.total_pnl) == (len(closed), realised), sub_id
            change = Counter()
            for entry in SimulatorAdmin(sim.url).ledger(creds.api_key):
                if entry["kind"] != "deposit":
                    change[entry["currency"]] += Decimal(entry["free_delta"]) + Decimal(entry["locked_delta"])
            open_ = [t for t in mine if t.status == "OPEN"]
            if world is spot:
                open_cost = sum((t.entry_price * t.quantity + t.entry_fee for t in open_), Decimal(0))
            else:
                open_cost = sum((t.entry_fee for t in open_), Decimal(0))
            assert change["USDT"] == realised - open_cost, (sub_id, change, realised, open_cost)
    assert sum(1 for t in trades if t.status == "CLOSED") >= 2, [t.status for t in trades]
