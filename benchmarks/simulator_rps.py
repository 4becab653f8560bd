"""The simulator's own CPU per request: what it takes from the cores it shares with the fan-out.

Starts `xcoin exchange serve --no-rate-limits` in its own process (as benchmarks/fanout_shards.py
does), creates N accounts, then fires the fan-out's request mix from one aiohttp client at a fixed
concurrency, signed as the CoinDCX client signs:

- LONG: a market buy per account, then a resting limit sell (the take profit) per account;
- EXIT: the take profit cancelled, then a market sell per account.

Reported per phase: requests, wall seconds, requests/s and the simulator process's CPU seconds
(/proc/<pid>/stat, user + system) per request — compare CPU, not wall: the host is shared and the
client runs on the same cores. Every answer must be 200 (the run stops otherwise).

    .venv/bin/python benchmarks/simulator_rps.py [--accounts 2000] [--concurrency 64] [--rounds 2]
    git worktree add /tmp/before <commit> && .venv/bin/python benchmarks/simulator_rps.py \\
        --peer-tree /tmp/before --repeat 3        # the same run measures an older simulator too
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xcoin_trading.exchange.simulator import SimulatorAdmin, SimulatorProcess  # noqa: E402

QTY = "0.001"  # ≈ 42 USDT at a January 2024 BTC price: above the minimum notional
REPLAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTCUSDT-1m-2024-01.parquet"
START_MS = 1_704_153_600_000  # 2024-01-02T00:00Z, a day into the replay


def _signed(key: str, secret: bytes, body: dict) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps({**body, "timestamp": int(time.time() * 1000)}, separators=(",", ":")).encode()
    return payload, {
        "Content-Type": "application/json",
        "X-AUTH-APIKEY": key,
        "X-AUTH-SIGNATURE": hmac.new(secret, payload, hashlib.sha256).hexdigest(),
    }


async def _phase(url: str, calls: list[tuple[str, str, bytes, dict]], concurrency: int, session) -> list:
    """POST every (path, key, secret, body) with at most `concurrency` in flight; the JSON answers."""
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str, key: str, secret: bytes, body: dict):
        payload, headers = _signed(key, secret, body)
        async with gate, session.post(url + path, data=payload, headers=headers) as resp:
            text = await resp.read()
            if resp.status != 200:
                raise SystemExit(f"{path}: HTTP {resp.status} {text[:200]!r}")
            return json.loads(text)

    return await asyncio.gather(*(one(*c) for c in calls))


async def run(url: str, cpu, accounts: list[tuple[str, bytes]], concurrency: int, rounds: int) -> list[dict]:
    import aiohttp

    rows = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        create, cancel = "/exchange/v1/orders/create", "/exchange/v1/orders/cancel"
        tps: dict[str, str] = {}  # account -> its resting take profit's id
        for _ in range(rounds):
            phases = [
                ("LONG market buy", lambda: [(create, k, s, _order("buy", "market_order")) for k, s in accounts]),
                ("LONG resting TP", lambda: [(create, k, s, _order("sell", "limit_order", "999999"))
                                             for k, s in accounts]),
                ("EXIT cancel TP", lambda: [(cancel, k, s, {"id": tps[k]}) for k, s in accounts]),
                ("EXIT market sell", lambda: [(create, k, s, _order("sell", "market_order")) for k, s in accounts]),
            ]  # fmt: skip
            for name, build in phases:
                calls = build()
                (user0, sys0), t0 = cpu(), time.perf_counter()
                answers = await _phase(url, calls, concurrency, session)
                (user1, sys1), wall = cpu(), time.perf_counter() - t0
                if name == "LONG resting TP":
                    tps.update((k, a["orders"][0]["id"]) for (k, _), a in zip(accounts, answers, strict=True))
                rows.append({"phase": name, "requests": len(calls), "wall": wall, "user": user1 - user0,
                             "sys": sys1 - sys0, "cpu": user1 - user0 + sys1 - sys0})  # fmt: skip
    return rows


def _order(side: str, order_type: str, price: str | None = None) -> dict:
    body = {"side": side, "order_type": order_type, "market": "BTCUSDT", "total_quantity": QTY,
            "client_order_id": str(uuid.uuid4())}  # fmt: skip
    if price is not None:
        body["price_per_unit"] = price
    return body


@contextmanager
def _tree(path: Path | None):
    """Start the simulator process from another checkout (its code imported first) when given."""
    if path is None:
        yield
        return
    cwd, pythonpath = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(path)  # `python -c` puts the working directory first on sys.path
    os.environ["PYTHONPATH"] = str(path)
    try:
        yield
    finally:
        os.chdir(cwd)
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath


def measure(args: argparse.Namespace, tree: Path | None) -> list[dict]:
    """One simulator process (from `tree`, else this checkout), N accounts, `rounds` LONG + EXIT."""
    sim_args = ["--no-rate-limits"]
    if REPLAY.exists():  # the fan-out benchmarks' simulator; otherwise seeded random walks
        sim_args += ["--replay", str(REPLAY), "--symbol", "BTCUSDT", "--start-ms", str(START_MS)]
    with _tree(tree):
        sim = SimulatorProcess(sim_args).start()
    try:
        with SimulatorAdmin(sim.url, timeout=120) as admin:
            for _ in range(100):  # "serving on" is printed just before uvicorn listens
                try:
                    admin.now_ms()
                    break
                except Exception:  # noqa: BLE001
                    time.sleep(0.1)
            accounts = [
                (f"rps-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex.encode()) for _ in range(args.accounts)
            ]
            for i in range(0, len(accounts), 1000):
                admin.add_accounts([{"api_key": k, "api_secret": s.decode(), "balances": {"USDT": "100000", "BTC": "1"}}
                                    for k, s in accounts[i : i + 1000]])  # fmt: skip
        spy = None
        if args.py_spy and tree is None:  # where the simulator's CPU goes (needs py-spy and ptrace rights)
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(sim.pid), "--format", "raw", "-o", args.py_spy,
                                    "-r", "200"], stdout=subprocess.DEVNULL)  # fmt: skip
            time.sleep(1)
        rows = asyncio.run(run(sim.url, sim.cpu_times, accounts, args.concurrency, args.rounds))
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
    finally:
        sim.stop()
    measured = rows[4:] if args.rounds > 1 else rows  # round 1 warms caches
    total = {"phase": "all", "requests": 0, "wall": 0.0, "user": 0.0, "sys": 0.0, "cpu": 0.0}
    for r in measured:
        for k in ("requests", "wall", "user", "sys", "cpu"):
            total[k] += r[k]
    return [*measured, total]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=2000, help="accounts; each sends 4 requests a round")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=2, help="LONG + EXIT rounds (the first warms up)")
    parser.add_argument("--peer-tree", type=Path, help="another checkout (e.g. `git worktree add /tmp/before "
                        "<commit>`): its simulator measured in the same run, alternating, as the peer")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs of each simulator (alternating)")
    parser.add_argument("--py-spy", metavar="FILE", help="also record this checkout's simulator with py-spy")
    args = parser.parse_args()

    trees: list[tuple[str, Path | None]] = [("this", None)]
    if args.peer_tree is not None:
        trees.append(("peer", args.peer_tree.resolve()))
    results: dict[str, list[list[dict]]] = {name: [] for name, _ in trees}
    for _ in range(args.repeat):
        for name, tree in trees:
            results[name].append(measure(args, tree))

    print(f"\nSimulator CPU per request ({args.accounts} accounts, {args.concurrency} in flight, aiohttp client "
          f"on the same {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})\n")  # fmt: skip
    print(f"{'simulator':<9} {'run':>3} {'phase':<18} {'requests':>8} {'wall s':>7} {'req/s':>7} {'user s':>7} "
          f"{'sys s':>6} {'sim CPU s':>9} {'sim CPU µs/req':>14}")  # fmt: skip
    for name, runs in results.items():
        for i, rows in enumerate(runs, 1):
            for r in rows:
                print(f"{name:<9} {i:>3} {r['phase']:<18} {r['requests']:>8} {r['wall']:>7.2f} "
                      f"{r['requests'] / r['wall']:>7.0f} {r['user']:>7.2f} {r['sys']:>6.2f} {r['cpu']:>9.2f} "
                      f"{1e6 * r['cpu'] / r['requests']:>14.0f}")  # fmt: skip
    if args.peer_tree is not None:
        per_request = {
            n: [rows[-1]["cpu"] / rows[-1]["requests"] for rows in runs] for n, runs in results.items()
        }
        this, peer = statistics.median(per_request["this"]), statistics.median(per_request["peer"])
        print(f"\nmedian sim CPU per request: this {1e6 * this:.0f} µs, peer ({args.peer_tree}) {1e6 * peer:.0f} µs: "
              f"peer / this = {peer / this:.2f}x")  # fmt: skip
    print(
        "\nsim CPU: the simulator process's user + system CPU over the phase (/proc/<pid>/stat; 10 ms ticks)."
    )


if __name__ == "__main__":
    main()
