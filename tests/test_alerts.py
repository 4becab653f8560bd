"""Alerts reach the operator through apprise: an execution FAILED, a daily loss limit hit and an order
the reconciler marks LOST each arrive at a local HTTP sink (apprise's `json://` webhook) from the real
`xcoin` commands; no alert carries a secret; nothing is sent (or breaks) without XCOIN_ALERT_URLS."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fixtures.live import START
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Order, Subscription, Trade

CLOSE = START + timedelta(hours=1)
DEAD_URL = "http://127.0.0.1:9"


@pytest.fixture()
def sink():
    """A webhook on 127.0.0.1 that keeps every JSON body it is sent."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.received = received
    server.alert_url = f"json://127.0.0.1:{server.server_address[1]}/hook"
    yield server
    server.shutdown()


def _xcoin(world, *args: str, **env: str) -> subprocess.CompletedProcess:
    xcoin = str(Path(sys.executable).parent / "xcoin")
    return subprocess.run([xcoin, *args], env=world.env(**env), capture_output=True, text=True, timeout=300)


def _no_secret_in(alerts: list[dict], world) -> None:
    text = json.dumps(alerts)
    for creds in world.keys.values():
        assert creds.api_secret not in text and creds.api_key not in text
    for key in (world.settings.encryption_keys_b64 or "").split(","):
        assert key.split(":")[-1] not in text


def test_a_failed_execution_alerts_with_its_reason(live_world_factory, sink):
    world = live_world_factory(1)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    out = world.tick(
        CLOSE, XCOIN_ALERT_URLS=sink.alert_url, COINDCX_API_URL=DEAD_URL, COINDCX_PUBLIC_URL=DEAD_URL
    )
    assert out.returncode == 1
    [alert] = sink.received
    assert alert["title"].endswith("2024-01-01T01:00:00Z_1m FAILED") and alert["type"] == "failure"
    assert "Execution 1 of constant-" in alert["message"] and "is FAILED" in alert["message"]
    _no_secret_in(sink.received, world)


def test_a_daily_loss_limit_hit_alerts_naming_the_subscription(live_world_factory, sink):
    world = live_world_factory(2)
    limited = min(world.keys)
    with session_scope(world.settings) as session:
        sub = session.get(Subscription, limited)
        sub.max_daily_loss = Decimal(10)
        session.add(Trade(subscription_id=sub.id, strategy_id=sub.strategy_id, user_id=sub.user_id,
                          symbol="BTCUSDT", side="LONG", quantity=Decimal("0.001"), status="CLOSED",
                          pnl=Decimal(-25), exit_time=CLOSE - timedelta(minutes=5)))  # fmt: skip
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    out = world.tick(CLOSE, XCOIN_ALERT_URLS=sink.alert_url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"subscription {limited}: REFUSED (max daily loss reached" in out.stdout
    [alert] = sink.received
    assert alert["title"] == f"xcoin: daily loss limit hit, subscription {limited}"
    assert "lost 25 today, limit 10" in alert["message"]


def test_an_order_the_reconciler_marks_lost_alerts(live_world_factory, sink):
    world = live_world_factory(1)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    assert world.tick(CLOSE).returncode == 0
    with session_scope(world.settings) as session:  # an intent that never reached the exchange
        tp = session.scalar(sa.select(Order).where(Order.leg == "TAKE_PROFIT"))
        session.add(Order(subscription_id=tp.subscription_id, trade_id=tp.trade_id, leg="TAKE_PROFIT",
                          client_order_id="xc-never-sent", market="BTCUSDT", side="sell",
                          order_type="limit_order", price=tp.price, quantity=tp.quantity, status="UNKNOWN",
                          lookup_misses=2))  # fmt: skip
    out = _xcoin(world, "reconcile", "--once", "--no-audit", XCOIN_ALERT_URLS=sink.alert_url)
    assert out.returncode == 0, out.stdout + out.stderr
    [alert] = sink.received
    assert alert["title"] == "xcoin: the reconciler found a mismatch"
    assert "1 order(s) the exchange does not know after 3 passes: marked LOST" in alert["message"]
    _no_secret_in(sink.received, world)


def test_without_urls_nothing_is_sent_and_a_dead_destination_never_breaks_the_command(
    live_world_factory, sink
):
    world = live_world_factory(1)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    out = world.tick(CLOSE, COINDCX_API_URL=DEAD_URL, COINDCX_PUBLIC_URL=DEAD_URL)
    assert out.returncode == 1 and sink.received == []
    later = CLOSE + timedelta(minutes=1)
    world.admin.advance(to_ms=int(later.timestamp() * 1000))
    out = world.tick(later, XCOIN_ALERT_URLS="json://127.0.0.1:9/nobody", COINDCX_API_URL=DEAD_URL,
                     COINDCX_PUBLIC_URL=DEAD_URL)  # fmt: skip
    assert out.returncode == 1 and ": FAILED" in out.stdout and "Traceback" not in out.stderr


def test_redaction_masks_configured_secrets_and_token_shaped_text(monkeypatch, master_key_env):
    from xcoin_trading.alerts import redact
    from xcoin_trading.config import get_settings, reset_settings

    monkeypatch.setenv("XCOIN_JWT_SECRET", "jwt-secret-that-is-long-enough-000000")
    reset_settings()
    key = get_settings().encryption_keys_b64.split(",")[0].split(":")[-1]
    text = redact(f"key {key} jwt jwt-secret-that-is-long-enough-000000 sig {'ab' * 32} order xc-12-3-ENTRY")
    assert key not in text and "jwt-secret" not in text and "ab" * 32 not in text
    assert "xc-12-3-ENTRY" in text  # ids stay readable
