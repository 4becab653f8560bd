"""Run user strategy code isolated from the host and from every other run.

What each run gets (bubblewrap, its own uid, namespaces, cgroups, pipes), the fallbacks without root
or cgroups, and what a production host needs: docs/security.md ("Strategy sandbox").

This module owns a run's lifecycle (start, spares started ahead, one job, clean-up); the confinement
is `sandbox_host.py`, the job protocol with the child `sandbox_protocol.py`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from xcoin_trading.strategy.contract import StrategyError
from xcoin_trading.strategy.sandbox_host import (
    CHILD,
    CHILD_INSIDE,
    RunCgroups,
    SandboxLimits,
    UidSlot,
    bwrap_prefix,
    cgroups_available,
    isolation_available,
    isolation_mode,
    shell_limits,
)
from xcoin_trading.strategy.sandbox_protocol import (
    SandboxRun,
    answer_limit,
    classify,
    exchange,
    job_bytes,
    kill_group,
)

__all__ = [
    "SandboxLimits",
    "SandboxRun",
    "answer_limit",
    "cgroups_available",
    "discard_spares",
    "isolation_available",
    "isolation_mode",
    "prewarm",
    "run_sandboxed",
]


@dataclass
class _Started:
    """A sandbox started and importing (or waiting for its job on stdin): used for one job only."""

    proc: subprocess.Popen
    answer_r: int
    limits: SandboxLimits
    slot: UidSlot | None
    cgroups: RunCgroups | None

    def close(self) -> None:
        if self.answer_r >= 0:
            os.close(self.answer_r)
            self.answer_r = -1
        kill_group(self.proc)
        if self.cgroups:
            self.cgroups.remove()
        if self.slot:
            self.slot.release()


def _start(limits: SandboxLimits) -> _Started:
    slot = UidSlot() if isolation_available() else None
    cgroups = None
    try:
        if slot and cgroups_available():
            cgroups = RunCgroups(f"xcoin-sandbox-{slot.uid}", limits)
        prefix = bwrap_prefix(slot.uid, limits) if slot else []
        if slot and cgroups is None and shutil.which("prlimit"):  # per uid, and the uid is the run's own
            prefix = ["prlimit", f"--nproc={limits.pids}", "--", *prefix]
        child = CHILD_INSIDE if slot else str(CHILD)
        answer_r, answer_w = os.pipe()
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp" if slot else "/nonexistent", "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "POLARS_MAX_THREADS": "2"}  # fmt: skip
        cmd = ["/bin/sh", "-c", shell_limits(limits, cgroups), "sh", *prefix, sys.executable, "-I", child,
               str(answer_w)]  # fmt: skip
        try:
            proc = subprocess.Popen(
                cmd, env=env, cwd="/" if slot else None, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, pass_fds=(answer_w,), start_new_session=True,
            )  # fmt: skip
        except BaseException:
            os.close(answer_r)
            raise
        finally:
            os.close(answer_w)
    except BaseException:
        if cgroups:
            cgroups.remove()
        if slot:
            slot.release()
        raise
    return _Started(proc, answer_r, limits, slot, cgroups)


# Spare sandboxes started ahead of their job (`prewarm`): the interpreter and polars load while the
# caller does other work (the live coordinator: claims, candles from the exchange). Each serves one job.
_spares: dict[SandboxLimits, list[_Started]] = {}
_spares_lock = threading.Lock()
MAX_SPARES = 16


def prewarm(limits: SandboxLimits | None = None, count: int = 1) -> None:
    """Start up to `count` spare sandboxes for `limits` (a uid slot and cgroups each while idle)."""
    limits = limits or SandboxLimits()
    with _spares_lock:
        have = len(_spares.get(limits, []))
        wanted = max(0, min(count, MAX_SPARES) - have)
    started = [_start(limits) for _ in range(wanted)]
    with _spares_lock:
        _spares.setdefault(limits, []).extend(started)


def _take_spare(limits: SandboxLimits) -> _Started | None:
    with _spares_lock:
        pool = _spares.get(limits, [])
        while pool:
            spare = pool.pop(0)
            if spare.proc.poll() is None:
                return spare
            spare.close()
    return None


@atexit.register
def discard_spares() -> None:
    with _spares_lock:
        spares = [s for pool in _spares.values() for s in pool]
        _spares.clear()
    for spare in spares:
        spare.close()


def run_sandboxed(
    code: str,
    source: str,
    candles: pl.DataFrame,
    params: dict[str, Any],
    limits: SandboxLimits | None = None,
    *,
    deadline: float | None = None,
) -> SandboxRun:
    """The raw frame the user's `signals(candles, params)` returned (validate it after).

    `deadline` (time.time()) ends the run earlier than `limits.wall_seconds` if it comes first:
    live runs pass the candle's close + the wall limit."""
    limits = limits or SandboxLimits()
    timeout = limits.wall_seconds
    if deadline is not None:
        timeout = min(timeout, deadline - time.time())
    if timeout <= 0:
        raise StrategyError(
            code, f"was not started: its wall-clock limit of {limits.wall_seconds:g} s had passed"
        )
    job = job_bytes(source, candles, params)
    run = _take_spare(limits) or _start(limits)
    try:
        outcome = exchange(run.proc, run.answer_r, job, timeout, limits, candles.height, run.cgroups)
        kill_group(run.proc)
        return classify(code, outcome, limits, run.cgroups, candles.height, run.slot)
    finally:
        run.close()
