"""The parent's side of the job protocol with `_sandbox_child.py`: the job bytes in, the answer and
printed output read back under their caps, and the exit classified into the author's error message.
Everything the child reports is untrusted; this module only decides what it means.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from xcoin_trading.strategy.answer import BadAnswer, read_answer
from xcoin_trading.strategy.contract import StrategyError
from xcoin_trading.strategy.sandbox_host import RunCgroups, SandboxLimits, UidSlot

REPORT = "xcoin-strategy-error: "
REPORT_LIMIT = 300  # characters of the strategy's own error report shown to its author
OUTPUT_LIMIT = 4000  # characters of stdout/stderr kept for the report


@dataclass(frozen=True)
class SandboxRun:
    signals: pl.DataFrame
    stdout: str  # what the strategy printed, truncated: shown to its author, never interpreted
    isolated: bool  # True when bubblewrap + own uid were in force
    uid: int | None = None
    cpu_ms: float | None = None  # CPU time of all the run's processes (cgroup cpuacct), where known


def _clip(data: bytes, limit: int = OUTPUT_LIMIT) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


def _own_report(output: bytes) -> str:
    """The strategy's own last error line, clipped and stripped of control characters."""
    lines = [ln for ln in output.decode("utf-8", "replace").splitlines() if ln.startswith(REPORT)]
    if not lines:
        return ""
    text = re.sub(r"[^\x20-\x7e]", "?", lines[-1][len(REPORT) :])[:REPORT_LIMIT]
    return f' (its own report: "{text}")'


def answer_limit(rows: int, limits: SandboxLimits) -> int:
    """Bytes of answer accepted for `rows` candles: room for the 3 contract columns and some extra."""
    return min(limits.output_mb * 1024 * 1024, 64 * 1024 + rows * 512)


def job_bytes(source: str, candles: pl.DataFrame, params: dict[str, Any]) -> bytes:
    """params JSON, source and candles (Arrow IPC stream), each length-prefixed. Written with pyarrow
    (C++, no polars thread pool), as the job may be built in many threads at once."""
    sink = pa.BufferOutputStream()
    table = candles.to_arrow()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    parts = (json.dumps(params, default=str).encode(), source.encode(), sink.getvalue().to_pybytes())
    return struct.pack("<III", *(len(p) for p in parts)) + b"".join(parts)


@dataclass
class _Outcome:
    answer: bytes
    output: bytes
    returncode: int | None
    stopped: str | None  # why the parent stopped the run early, in its own words


def exchange(proc: subprocess.Popen, answer_r: int, job: bytes, timeout: float, limits: SandboxLimits,
              rows: int, cgroups: RunCgroups | None = None) -> _Outcome:  # fmt: skip
    """Write the job, read the answer and output up to their caps, until exit, the deadline or (with
    a cpuacct cgroup) the run's processes together using up `limits.cpu_seconds`."""
    stdin_pipe, stdout_pipe = proc.stdin, proc.stdout
    if stdin_pipe is None or stdout_pipe is None:
        raise ValueError("a sandbox is started with stdin and stdout pipes")
    out_fd = stdout_pipe.fileno()
    caps = {answer_r: answer_limit(rows, limits), out_fd: limits.stdout_kb * 1024}
    got: dict[int, list[bytes]] = {fd: [] for fd in caps}
    sizes = dict.fromkeys(caps, 0)
    end = time.monotonic() + timeout
    stdin = stdin_pipe.fileno()
    os.set_blocking(stdin, False)
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_WRITE)
    for fd in caps:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    sent, stopped, open_reads, exited = 0, None, set(caps), None
    try:
        while open_reads or proc.poll() is None:
            if exited is None and proc.poll() is not None:
                exited = time.monotonic()  # a leftover holding the pipes gets 0.5 s, then is killed
            if exited is not None and time.monotonic() > exited + 0.5:
                break
            left = end - time.monotonic()
            if left <= 0:
                stopped = f"timed out after {round(timeout, 1):g} s (wall clock) and was killed"
                break
            used = cgroups.cpu_ms() if cgroups else None
            if used is not None and used > limits.cpu_seconds * 1000:
                stopped = f"exceeded its CPU limit of {limits.cpu_seconds} s (its processes together) and was killed"
                break
            if not open_reads:  # both pipes closed: only the exit status is still to come
                try:
                    proc.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    continue
                break
            for key, _ in sel.select(min(left, 0.1) if exited is None else 0.05):
                fd = key.fd
                if fd == stdin:
                    try:
                        sent += os.write(stdin, job[sent : sent + 65536])
                    except (BrokenPipeError, BlockingIOError):
                        sent = len(job)
                    if sent >= len(job):
                        sel.unregister(stdin)
                        stdin_pipe.close()
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    open_reads.discard(fd)
                    continue
                got[fd].append(chunk)
                sizes[fd] += len(chunk)
                if sizes[fd] > caps[fd]:
                    what = "answer" if fd == answer_r else "printed output"
                    stopped = f"wrote more than {caps[fd]} bytes of {what} and was killed"
                    break
            if stopped:
                break
    finally:
        sel.close()
        if not stdin_pipe.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin_pipe.close()
    if stopped:
        kill_group(proc)
    return _Outcome(b"".join(got[answer_r]), b"".join(got[out_fd]), proc.poll(), stopped)


def kill_group(proc: subprocess.Popen) -> None:
    """The whole process group (bwrap's --die-with-parent takes the pid namespace with it)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout and not proc.stdout.closed:
        proc.stdout.close()


def classify(code: str, out: _Outcome, limits: SandboxLimits, cgroups: RunCgroups | None, rows: int,
              slot: UidSlot | None) -> SandboxRun:  # fmt: skip
    printed = _clip(out.output)
    status = out.returncode
    # bwrap reports a child killed by signal N as exit status 128 + N; without bwrap Popen says -N.
    sig = (
        -status if status is not None and status < 0 else (status - 128 if status and status > 128 else None)
    )
    if cgroups and cgroups.oom_killed():
        raise StrategyError(code, f"exceeded its memory limit of {limits.memory_mb} MB and was killed")
    if out.stopped:
        raise StrategyError(code, out.stopped)
    procs = f"; it hit its limit of {limits.pids} processes" if cgroups and cgroups.pids_refused() else ""
    if status == 3:
        raise StrategyError(code, f"raised an exception{_own_report(out.output)}{procs}")
    if status == 4:
        raise StrategyError(code, f"exceeded its memory limit of {limits.memory_mb} MB")
    if sig == signal.SIGXCPU:
        raise StrategyError(code, f"exceeded its CPU limit of {limits.cpu_seconds} s and was killed")
    if sig == signal.SIGXFSZ:
        raise StrategyError(code, f"wrote a file over its limit of {limits.output_mb} MB and was killed")
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        raise StrategyError(code, f"was killed by signal {name}{procs}")
    if status != 0:
        raise StrategyError(code, f"crashed (exit status {status}){procs}")
    if not out.answer:
        raise StrategyError(code, "returned no signals")
    try:
        signals = read_answer(out.answer, rows)
    except BadAnswer as exc:
        raise StrategyError(code, f"returned an answer that {exc}") from None
    return SandboxRun(signals=signals, stdout=printed, isolated=slot is not None, uid=slot.uid if slot else None,
                      cpu_ms=cgroups.cpu_ms() if cgroups else None)  # fmt: skip
