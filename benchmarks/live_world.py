"""What the live benchmarks share: a fresh store per run, N subscribers (each its own simulator
account and keys) on one strategy, and the simulator replaying real BTCUSDT 1m candles."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

START = datetime(2024, 1, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
SEED_DELAY = 0.1  # seconds before each order in the seed design (a global sleep)
SEED_ORDERS = 3  # entry, stop loss, take profit
SIGNAL = """
import polars as pl
DEFAULT_PARAMS = {"action": "LONG"}
def signals(candles, params):
    return candles.select(pl.lit(params["action"]).alias("action"),
        (pl.col("close") * 0.98).alias("stop_loss"), (pl.col("close") * 1.04).alias("take_profit"))
"""


def fresh_store(tag: str, migrate_with: Path | None = None):
    """Settings for an empty migrated store: a new Postgres database, else SQLite in a temp home.
    `migrate_with`: another checkout whose migrations build it (its schema measured against ours)."""
    from xcoin_trading.config import get_settings, reset_settings
    from xcoin_trading.store.db import upgrade

    os.environ["XCOIN_HOME"] = tempfile.mkdtemp(prefix=f"xcoin-fanout-{tag}-")
    server = os.environ.get("XCOIN_TEST_POSTGRES_URL")
    os.environ.pop("XCOIN_DATABASE_URL", None)
    if server:
        import sqlalchemy as sa

        name = f"bench_fanout_{tag}_{uuid.uuid4().hex[:6]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        os.environ["XCOIN_DATABASE_URL"] = f"{server.rpartition('/')[0]}/{name}"
    reset_settings()
    settings = get_settings()
    if migrate_with is None:
        upgrade(settings)
    else:
        settings.ensure_dirs()
        code = "from xcoin_trading.config import get_settings as g; from xcoin_trading.store.db import upgrade; upgrade(g())"
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(migrate_with)},
                       cwd=migrate_with, check=True)  # fmt: skip
    return settings


def postgres_cpu() -> float:
    """CPU seconds used so far by every process named postgres on this host (the store's server and
    its backends), from /proc: the candle's share of the store is the difference over the candle."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name == "postgres":
            total += sum(map(int, fields[11:15]))  # utime, stime, and of its reaped children (backends)
    return total / tick


def drop_store(settings) -> None:
    from xcoin_trading.store.db import dispose_engines

    dispose_engines()
    url = settings.database_url_override
    server = os.environ.get("XCOIN_TEST_POSTGRES_URL")
    if url and server:
        import sqlalchemy as sa

        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)'))
        admin.dispose()


def seed(settings, admin, n: int) -> tuple[int, list]:
    """One strategy and n subscribers (user, encrypted keys, subscription), accounts on the simulator."""
    from xcoin_trading.exchange.client import Credentials
    from xcoin_trading.services import strategies, users
    from xcoin_trading.services.credentials import _context, mask
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import BrokerCredential, Subscription, User
    from xcoin_trading.vault import Vault

    vault = Vault.from_settings(settings)
    creds = [Credentials(f"fan-{uuid.uuid4().hex[:16]}", uuid.uuid4().hex) for _ in range(n)]
    with session_scope(settings) as session:
        author = users.register_user(session, "author@bench.io", "password-123")
        strategy = strategies.create_strategy(
            session, author.id, name="constant", code="constant", symbol="BTCUSDT", resolution="1m",
            source=SIGNAL, lookback=30, is_public=True,
        )  # fmt: skip
        strategy.validation_status = "VALID"
        people = [User(email=f"s{i}@bench.io") for i in range(n)]  # no password: sign-in is not measured
        session.add_all(people)
        session.flush()
        keys = [
            BrokerCredential(
                user_id=u.id,
                broker="coindcx",
                key_id=vault.active.key_id,
                api_key_hint=mask(c.api_key),
                api_key_encrypted=vault.encrypt(c.api_key, _context(u.id, "coindcx", "api_key")),
                api_secret_encrypted=vault.encrypt(c.api_secret, _context(u.id, "coindcx", "api_secret")),
            )  # fmt: skip
            for u, c in zip(people, creds, strict=True)
        ]
        session.add_all(keys)
        session.flush()
        session.add_all(
            Subscription(
                user_id=u.id,
                strategy_id=strategy.id,
                broker_credential_id=k.id,
                capital=Decimal(1000),
                risk_per_trade=Decimal("0.01"),
            )  # fmt: skip
            for u, k in zip(people, keys, strict=True)
        )
        strategy_id = strategy.id
    for i in range(0, n, 1000):
        admin.add_accounts(
            [
                {"api_key": c.api_key, "api_secret": c.api_secret, "balances": {"USDT": "10000", "BTC": "1"}}
                for c in creds[i : i + 1000]
            ]  # fmt: skip
        )
    return strategy_id, creds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def replay_simulator():
    """An embedded-free environment (fresh master key, no Redis, no exchange URLs) and a started
    simulator process replaying real BTCUSDT 1m candles from START."""
    os.environ.setdefault("XCOIN_ENCRYPTION_KEY", "k1:" + base64.b64encode(os.urandom(32)).decode())
    for var in ("XCOIN_REDIS_URL", "COINDCX_API_URL", "COINDCX_PUBLIC_URL"):
        os.environ.pop(var, None)
    from xcoin_trading.exchange.simulator import SimulatorProcess

    candles_file = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTCUSDT-1m-2024-01.parquet"
    if not candles_file.exists():
        raise SystemExit(f"{candles_file} is missing: the benchmark replays real BTCUSDT candles")
    return SimulatorProcess(["--no-rate-limits", "--replay", str(candles_file), "--symbol", "BTCUSDT",
                             "--start-ms", str(START_MS)]).start()  # fmt: skip


def ready_admin(sim, timeout: float):
    """The replay simulator's admin client once it answers, its clock two hours into the replay."""
    from xcoin_trading.exchange.simulator import SimulatorAdmin

    admin = SimulatorAdmin(sim.url, timeout=timeout)
    for _ in range(100):  # "serving on" is printed just before uvicorn listens
        try:
            admin.now_ms()
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.1)
    admin.advance(to_ms=START_MS + 2 * 3600_000)
    return admin
