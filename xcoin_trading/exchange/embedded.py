"""Which exchange to talk to: explicit URLs, else COINDCX_API_URL/COINDCX_PUBLIC_URL, else (the
embedded default) a simulator started in this process on first use and stopped at exit."""

from __future__ import annotations

import atexit
import threading
from typing import Any

from xcoin_trading.config import Settings
from xcoin_trading.timeframes import DAY_MS, to_ms, utcnow

EMBEDDED_HISTORY_DAYS = 30
_embedded_lock = threading.Lock()
_embedded_server: Any = None


def embedded_history_start_ms(now_ms: int | None = None) -> int:
    """First candle the embedded simulator serves: a UTC midnight EMBEDDED_HISTORY_DAYS back."""
    now = to_ms(utcnow()) if now_ms is None else now_ms
    return now - now % DAY_MS - EMBEDDED_HISTORY_DAYS * DAY_MS


def embedded_exchange_url() -> str:
    """URL of this process's simulator, started on first use and stopped at exit (embedded mode)."""
    global _embedded_server
    with _embedded_lock:
        if _embedded_server is None:
            from xcoin_trading.exchange.simulator.server import SimulatorServer

            # A live clock (sim time = wall time) so "today" and "closed day" mean what they will
            # mean against CoinDCX. The seeded walks start at a UTC midnight EMBEDDED_HISTORY_DAYS
            # back, so every process (each Dagster run starts one) serves the same prices that day.
            now = to_ms(utcnow())
            anchor = embedded_history_start_ms(now)
            server = SimulatorServer.random_walk(
                seed=0,
                realtime=True,
                start_ms=now,
                history_days=(now - anchor - 0.5) / DAY_MS,  # -0.5 ms: float error never crosses a minute
                future_days=EMBEDDED_HISTORY_DAYS,
            ).start()
            atexit.register(server.stop)
            _embedded_server = server
        return _embedded_server.url


def exchange_urls(
    settings: Settings, *, api_url: str | None = None, public_url: str | None = None
) -> tuple[str, str]:
    """(api url, public url): explicit ones, else the settings', else the embedded simulator's."""
    api = api_url or settings.api_url
    public = public_url or settings.public_url
    either = api or public  # one given serves for both; neither: the embedded simulator
    if not either:
        either = embedded_exchange_url()
    return api or either, public or either
