"""Run the simulator: `SimulatorServer` (uvicorn in a background thread on 127.0.0.1, free port)
and `SimulatorAdmin` (httpx client of the `/_sim/` admin API).

One base URL serves both CoinDCX path sets, so `api_url == public_url == server.url`.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from xcoin_trading.exchange.simulator.app import SimulatorApp
from xcoin_trading.exchange.simulator.engine import Exchange, SimConfig
from xcoin_trading.exchange.simulator.faults import FaultRule, Faults


class _OneWritePerStep:
    """A connection's transport whose writes within one event-loop step leave as one send: uvicorn
    writes a response's status line + headers and its body separately (two syscalls, two TCP
    segments for the client to read); joined, a small JSON answer costs one."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():  # the client left meanwhile: nothing to send to
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # the rest as the transport itself
        return getattr(self._transport, name)


class _SimulatorHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its writes joined per event-loop step (see _OneWritePerStep)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWritePerStep(transport, self.loop))  # type: ignore[arg-type]


def uvicorn_config(app: SimulatorApp, **options: Any) -> uvicorn.Config:
    """How the simulator is served, in a thread or a process: uvloop + uvicorn's httptools protocol
    (named: "auto" would pick them only when installed; uvicorn[standard] brings both) with one
    write per response, no access log, no proxy-header rewriting (nothing reads the client address;
    it cost ~1 % CPU per request), a deep accept backlog for the fan-out's bursts of connections."""
    return uvicorn.Config(
        app.asgi,
        loop="uvloop",
        http=_SimulatorHttpProtocol,
        interface="asgi3",  # a bound method: uvicorn's "auto" would take it for ASGI 2
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        lifespan="off",
        backlog=4096,
        **options,
    )


class _StartStop:
    """`with` starts the simulator and stops it on the way out (the thread and the process alike)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimulatorServer(_StartStop):
    def __init__(
        self,
        exchange: Exchange | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: list[FaultRule] | None = None,
        fault_seed: int | None = None,
    ):
        self.exchange = exchange or Exchange.random_walk()
        self.app = SimulatorApp(self.exchange, Faults(list(faults or []), seed=fault_seed))
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def random_walk(
        cls, *, seed: int = 0, config: SimConfig | None = None, port: int = 0, **kwargs: Any
    ) -> SimulatorServer:
        """Seeded random-walk feeds for every market (manual clock at 2024-01-01 unless `realtime`)."""
        return cls(Exchange.random_walk(seed=seed, config=config, **kwargs), port=port)

    @classmethod
    def from_replay(
        cls,
        parquet_path: str | Path,
        symbol: str,
        *,
        start_ms: int | None = None,
        seed: int = 0,
        config: SimConfig | None = None,
        port: int = 0,
        **kwargs: Any,
    ) -> SimulatorServer:
        """Replay a candle file (as in ../shared/data) as `symbol`'s feed; other coins random-walk."""
        return cls(
            Exchange.replay({symbol: parquet_path}, start_ms=start_ms, seed=seed, config=config, **kwargs),
            port=port,
        )

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def now_ms(self) -> int:
        return self.exchange.clock.now()

    def start(self) -> SimulatorServer:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn_config(self.app, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"xcoin-sim-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("simulator failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None


class SimulatorProcess(_StartStop):
    """`xcoin exchange serve` in a child process (its own core and GIL: benchmarks, fan-out load).

    `args` are extra CLI options, e.g. `["--no-rate-limits", "--replay", path, "--symbol", "BTCUSDT"]`.
    """

    def __init__(self, args: list[str] | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.args = [*(args or []), "--host", host, "--port", str(port)]
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> SimulatorProcess:
        code = "from xcoin_trading.cli import main; main()"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, "exchange", "serve", *self.args], stdout=subprocess.PIPE, text=True
        )
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if "serving on " not in line:
            self.stop()
            raise RuntimeError(f"simulator process did not start: {line.strip()!r}")
        self.url = line.split("serving on ", 1)[1].split()[0]
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("simulator process is not running")
        return self._proc.pid

    def cpu_seconds(self) -> float:
        """CPU time the simulator process has used (Linux /proc), to tell server from client cost."""
        user, system = self.cpu_times()
        return user + system

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the simulator process (Linux /proc; 10 ms ticks)."""
        import os
        from pathlib import Path

        if self._proc is None:
            return 0.0, 0.0
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None


class SimulatorAdmin:
    """The admin API of a running simulator (in-process or another process)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        from xcoin_trading.exchange.errors import error_from_body

        response = self._http.request(method, path, json=json, params=params)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise error_from_body(response.status_code, body, endpoint=path)
        return response.json()

    def add_account(
        self, api_key: str, api_secret: str, balances: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = {
            "api_key": api_key,
            "api_secret": api_secret,
            "balances": {k: str(v) for k, v in (balances or {}).items()},
        }
        return self._call("POST", "/_sim/accounts", body)

    def add_accounts(self, accounts: list[dict[str, Any]]) -> dict[str, Any]:
        """Many accounts in one call: [{"api_key", "api_secret", "balances": {...}}, ...]."""
        return self._call("POST", "/_sim/accounts/bulk", {"accounts": accounts})

    def deposit(self, api_key: str, currency: str, amount: str) -> dict[str, Any]:
        return self._call(
            "POST", "/_sim/deposit", {"api_key": api_key, "currency": currency, "amount": str(amount)}
        )

    def advance(self, to_ms: int | None = None, *, by_ms: int | None = None) -> dict[str, Any]:
        body = {"to_ms": int(to_ms)} if to_ms is not None else {"by_ms": int(by_ms or 0)}
        return self._call("POST", "/_sim/advance", body)

    def set_faults(
        self, *rules: dict[str, Any] | FaultRule, seed: int | None = None, **one_rule: Any
    ) -> dict[str, Any]:
        """`set_faults(error_5xx=0.1)` or `set_faults({"lost_reply": 1, "count": 1, "endpoints": ["orders/create"]})`.
        No arguments clears every fault."""
        items: list[dict[str, Any]] = []
        for r in rules:
            items.append(r if isinstance(r, dict) else {k: v for k, v in r.__dict__.items()})
        if one_rule:
            items.append(one_rule)
        return self._call("POST", "/_sim/faults", {"rules": items, "seed": seed})

    def clear_faults(self) -> dict[str, Any]:
        return self._call("DELETE", "/_sim/faults")

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/faults")

    def ledger(self, api_key: str, since_seq: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", "/_sim/ledger", params={"api_key": api_key, "since_seq": since_seq})[
            "entries"
        ]

    def balances(self, api_key: str) -> dict[str, dict[str, str]]:
        rows = self._call("GET", "/_sim/balances", params={"api_key": api_key})["balances"]
        return {r["currency"]: {"balance": r["balance"], "locked_balance": r["locked_balance"]} for r in rows}

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/state")

    def now_ms(self) -> int:
        return int(self._call("GET", "/_sim/clock")["now_ms"])

    def configure(self, **values: Any) -> dict[str, Any]:
        return self._call(
            "POST",
            "/_sim/config",
            {
                k: (str(v) if v is not None and not isinstance(v, bool | int | float) else v)
                for k, v in values.items()
            },
        )
