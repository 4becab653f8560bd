"""`xcoin api serve` serves the API on the port asked for (embedded default: SQLite, generated secrets)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

XCOIN = os.path.join(os.path.dirname(sys.executable), "xcoin")  # the installed console script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_api_serve_answers_on_its_port(xcoin_home):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XCOIN_", "COINDCX_"))}
    env["XCOIN_HOME"] = str(xcoin_home)
    proc = subprocess.Popen(
        [XCOIN, "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                health = httpx.get(f"{base}/health", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.2)
        else:
            raise AssertionError("xcoin api serve did not answer within 30 s")
        assert health.json()["checks"]["database"]["status"] == "ok"
        registered = httpx.post(
            f"{base}/auth/register", json={"email": "cli@example.com", "password": "longenough"}
        )
        assert registered.status_code == 201
        me = httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {registered.json()['token']}"})
        assert me.json()["email"] == "cli@example.com"
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "xcoin"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
