"""Peak memory of `xcoin api serve` under a burst of parallel logins, bounded vs unbounded argon2.

Each argon2 verification holds 64 MiB. The API runs at most `XCOIN_PASSWORD_CHECKS` at once per
process (default 4); the peer is the same server with the bound lifted (= the burst size), which is
what the API did before. Both run embedded (SQLite, in-memory throttle) in their own process; the
burst is N wrong passwords for N different emails, all released at once (N ≤ the per-IP limit of 30,
so every one is verified). Prints peak RSS (VmHWM) and the burst's wall time.

    .venv/bin/python benchmarks/api_login_burst.py [--burst 24]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(checks: int, burst: int) -> tuple[float, float, float]:
    """(peak RSS before the burst, peak RSS after it, burst wall seconds) for one server."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XCOIN_", "COINDCX_"))}
        env.update(XCOIN_HOME=home, XCOIN_PASSWORD_CHECKS=str(checks))
        xcoin = str(Path(sys.executable).with_name("xcoin"))
        proc = subprocess.Popen(
            [xcoin, "api", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/auth/oauth/providers", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            httpx.post(f"{url}/auth/register", json={"email": "b@x.io", "password": "warm up the hasher"})
            before = _peak_rss_mib(proc.pid)
            barrier = threading.Barrier(burst)

            def login(i: int) -> int:
                with httpx.Client(base_url=url, timeout=120) as client:
                    client.get("/auth/oauth/providers")
                    barrier.wait()
                    return client.post(
                        "/auth/login", json={"email": f"who{i}@x.io", "password": "wrong password"}
                    ).status_code

            started = time.perf_counter()
            with ThreadPoolExecutor(burst) as pool:
                statuses = list(pool.map(login, range(burst)))
            wall = time.perf_counter() - started
            assert statuses == [401] * burst, statuses
            return before, _peak_rss_mib(proc.pid), wall
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=24)
    args = parser.parse_args()
    rows = []
    for label, checks in (("unbounded (peer)", args.burst), ("bounded (default)", 4)):
        before, after, wall = measure(checks, args.burst)
        rows.append((label, checks, before, after, wall))
    peer_growth = rows[0][3] - rows[0][2]
    print(f"{args.burst} parallel wrong passwords, one API process (embedded)")
    print(f"{'argon2 at once':<20} {'limit':>5} {'RSS before MiB':>15} {'peak MiB':>9} {'growth':>7} "
          f"{'x peer':>7} {'wall s':>7}")  # fmt: skip
    for label, checks, before, after, wall in rows:
        growth = after - before
        print(f"{label:<20} {checks:>5} {before:>15.0f} {after:>9.0f} {growth:>7.0f} "
              f"{growth / peer_growth if peer_growth else 0:>7.2f} {wall:>7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
