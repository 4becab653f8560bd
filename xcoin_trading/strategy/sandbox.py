"""Run user strategy code in a locked-down subprocess: wall-clock timeout, CPU and memory rlimits, no
network (its own network namespace), an unprivileged user, an empty environment, and only Arrow IPC
files in and out. Whatever it prints is captured, truncated and reported, never parsed or trusted.

As root (production workers, CI) the child runs `unshare --net` then `setpriv` to `nobody`, so it can
neither reach the network nor read the master key file or another process's environment. Elsewhere
it falls back to rlimits + empty environment and logs a warning once.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from xcoin_trading.strategy.contract import StrategyError

log = logging.getLogger(__name__)
CHILD = Path(__file__).with_name("_sandbox_child.py")
NOBODY = 65534
OUTPUT_LIMIT = 4000  # characters of stdout/stderr kept for the report


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 30.0
    cpu_seconds: int = 30
    memory_mb: int = 2048
    output_mb: int = 64  # largest file the child may write (the signals)


@dataclass(frozen=True)
class SandboxRun:
    signals: pl.DataFrame
    stdout: str  # what the strategy printed, truncated: shown to its author, never interpreted
    isolated: bool  # True when network namespace + unprivileged user were in force


def _isolation_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if not unshare or not setpriv:
        return []
    return [
        unshare, "--net", "--",
        setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs", "--",
    ]  # fmt: skip


_probe: bool | None = None


def isolation_available() -> bool:
    """Whether namespaces + user switch work here (checked once by running `true` that way)."""
    global _probe
    if _probe is None:
        prefix = _isolation_prefix()
        _probe = bool(prefix) and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
        if not _probe:
            log.warning("strategy sandbox: no network namespace/unprivileged user here; using rlimits only")
    return _probe


def _clip(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return (
        text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + f"... [{len(text) - OUTPUT_LIMIT} more]"
    )


def run_sandboxed(
    code: str, source: str, candles: pl.DataFrame, params: dict[str, Any], limits: SandboxLimits | None = None
) -> SandboxRun:
    """The raw frame the user's `signals(candles, params)` returned (validate it after)."""
    limits = limits or SandboxLimits()
    isolated = isolation_available()
    with tempfile.TemporaryDirectory(prefix="xcoin-sandbox-") as work:
        work_path = Path(work)
        candles.write_ipc(work_path / "candles.arrow")
        (work_path / "params.json").write_text(json.dumps(params, default=str))
        (work_path / "strategy.py").write_text(source)
        if isolated:
            os.chmod(work, 0o777)  # the unprivileged child writes its answer here
            for f in work_path.iterdir():
                os.chmod(f, 0o644)
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "POLARS_MAX_THREADS": "2"}  # fmt: skip
        rlimits = (limits.memory_mb * 1024 * 1024, limits.cpu_seconds, limits.output_mb * 1024 * 1024)
        cmd = [*(_isolation_prefix() if isolated else []), sys.executable, "-I", str(CHILD), work,
               *(str(x) for x in rlimits)]  # fmt: skip
        proc = subprocess.Popen(  # its own session: a timeout kills everything it started
            cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = proc.communicate(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise StrategyError(
                code, f"timed out after {limits.wall_seconds:g} s (wall clock) and was killed"
            ) from None
        printed = _clip(output or b"")
        error_file = work_path / "error.json"
        if error_file.exists():
            err = json.loads(error_file.read_text())
            where = f" at {err['where']}" if err.get("where") else ""
            if err["type"] == "MemoryError":
                raise StrategyError(code, f"exceeded its memory limit of {limits.memory_mb} MB{where}")
            raise StrategyError(code, f"raised {err['type']}: {err['message']}{where}")
        if proc.returncode != 0:
            if (
                proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL)
                or proc.returncode == 128 + signal.SIGXCPU
            ):
                raise StrategyError(code, f"exceeded its CPU limit of {limits.cpu_seconds} s and was killed")
            hint = (
                "; it may have exceeded its memory limit"
                if "MemoryError" in printed or "memory" in printed
                else ""
            )
            raise StrategyError(code, f"crashed (exit code {proc.returncode}){hint}")
        out_file = work_path / "signals.arrow"
        if not out_file.exists():
            raise StrategyError(code, "returned no signals")
        try:
            # From memory, as the child reads: given a path, polars' first read in a process (a Dagster
            # run is one candle) probes it as a possible cloud URL, ~80 ms.
            signals = pl.read_ipc(io.BytesIO(out_file.read_bytes()))
        except Exception as exc:  # a corrupt answer is the strategy's fault, not ours
            raise StrategyError(code, f"returned unreadable signals ({type(exc).__name__})") from None
    return SandboxRun(signals=signals, stdout=printed, isolated=isolated)
