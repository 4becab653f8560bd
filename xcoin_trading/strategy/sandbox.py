"""Run user strategy code isolated from the host and from every other run.

What each run gets (bubblewrap, its own uid, namespaces, cgroups, pipes), the fallbacks without root
or cgroups, and what a production host needs: docs/security.md ("Strategy sandbox").
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import logging
import os
import random
import re
import selectors
import shlex
import shutil
import signal
import site
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from xcoin_trading.errors import ConfigError, XcoinError
from xcoin_trading.strategy.answer import BadAnswer, read_answer
from xcoin_trading.strategy.contract import StrategyError

log = logging.getLogger(__name__)
CHILD = Path(__file__).with_name("_sandbox_child.py")
CHILD_INSIDE = "/xcoin/child.py"
LOCK_DIR = Path(os.environ.get("XCOIN_SANDBOX_LOCK_DIR", "/run/xcoin-sandbox"))
REPORT = "xcoin-strategy-error: "
REPORT_LIMIT = 300  # characters of the strategy's own error report shown to its author
OUTPUT_LIMIT = 4000  # characters of stdout/stderr kept for the report
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _uid_range() -> range:
    lo, _, hi = os.environ.get("XCOIN_SANDBOX_UIDS", "200000-200999").partition("-")
    return range(int(lo), int(hi) + 1)


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 30.0
    cpu_seconds: int = 30  # per process (RLIMIT_CPU); the cgroup's cpu quota caps the run at cpu_cores
    memory_mb: int = 2048  # the run's processes together (cgroup), tmpfs included
    output_mb: int = 64  # largest answer, and the private /tmp's size
    pids: int = 64  # processes + threads of the run
    cpu_cores: float = 1.0
    stdout_kb: int = 1024  # printed output beyond this kills the run


@dataclass(frozen=True)
class SandboxRun:
    signals: pl.DataFrame
    stdout: str  # what the strategy printed, truncated: shown to its author, never interpreted
    isolated: bool  # True when bubblewrap + own uid were in force
    uid: int | None = None
    cpu_ms: float | None = None  # CPU time of all the run's processes (cgroup cpuacct), where known


# ---- what this host offers (checked once) ---------------------------------------------------


_mode: str | None = None
_cgroups_ok: bool | None = None


def isolation_mode() -> str:
    """ "bwrap" (root + bubblewrap + setpriv) or "rlimits" (a warning is logged once)."""
    global _mode, _nested_userns_block
    if _mode is None:
        _mode = "rlimits"
        if os.geteuid() == 0 and shutil.which("bwrap") and shutil.which("setpriv"):
            probe = subprocess.run(
                _bwrap_prefix(min(_uid_range()), None) + ["/bin/true"], capture_output=True
            )
            if probe.returncode == 0:
                _mode = "bwrap"
                inner = subprocess.run(
                    _bwrap_prefix(min(_uid_range()), None) + NO_NESTED_USERNS + ["/bin/true"],
                    capture_output=True,
                )
                _nested_userns_block = inner.returncode == 0
                if not _nested_userns_block:
                    log.warning(
                        "strategy sandbox: no unprivileged user namespaces; strategies may create their own"
                    )
            else:
                log.warning(
                    "strategy sandbox: bwrap failed (%s)", probe.stderr.decode(errors="replace")[:200]
                )
        if _mode != "bwrap":
            log.warning("strategy sandbox: no bubblewrap as root here; strategies get rlimits only")
    return _mode


def isolation_available() -> bool:
    return isolation_mode() == "bwrap"


def _own_cgroup(controller: str) -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    return None


def cgroups_available() -> bool:
    """Whether per-run v1 memory + pids (+ cpu) cgroups can be made under ours."""
    global _cgroups_ok
    if _cgroups_ok is None:
        _cgroups_ok = os.geteuid() == 0 and all(
            (p := _own_cgroup(c)) is not None and os.access(p, os.W_OK) for c in ("memory", "pids")
        )
        if not _cgroups_ok:
            log.warning("strategy sandbox: cgroups not writable; memory/process limits are per process")
    return _cgroups_ok


# ---- one run's uid slot and cgroups ----------------------------------------------------------


class _UidSlot:
    """An exclusive uid for one run, across threads and processes (flock on a per-uid file)."""

    def __init__(self) -> None:
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        uids = _uid_range()
        start = random.randrange(len(uids))
        for i in range(len(uids)):
            uid = uids[(start + i) % len(uids)]
            fd = os.open(LOCK_DIR / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise XcoinError(f"no free sandbox uid in {uids.start}-{uids.stop - 1}: too many concurrent runs")

    def release(self) -> None:
        os.close(self._fd)


class _RunCgroups:
    def __init__(self, name: str, limits: SandboxLimits) -> None:
        self.paths: dict[str, Path] = {}
        for controller in ("memory", "pids", "cpu", "cpuacct"):
            base = _own_cgroup(controller)
            if base is None or not os.access(base, os.W_OK):
                continue
            path = base / name
            if path.exists():  # a crashed worker's leftover for this uid
                _kill_and_remove(path)
            path.mkdir()
            self.paths[controller] = path
        memory = self.paths.get("memory")
        if memory:
            limit = str(limits.memory_mb * 1024 * 1024)
            (memory / "memory.limit_in_bytes").write_text(limit)
            if (memory / "memory.memsw.limit_in_bytes").exists():
                (memory / "memory.memsw.limit_in_bytes").write_text(limit)
        if "pids" in self.paths:
            (self.paths["pids"] / "pids.max").write_text(str(limits.pids))
        if "cpu" in self.paths:
            (self.paths["cpu"] / "cpu.cfs_quota_us").write_text(str(int(limits.cpu_cores * 100_000)))

    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths.values()]

    def oom_killed(self) -> bool:
        memory = self.paths.get("memory")
        if not memory:
            return False
        control = dict(line.split() for line in (memory / "memory.oom_control").read_text().splitlines())
        return int(control.get("oom_kill", 0)) > 0 or int((memory / "memory.failcnt").read_text()) > 0

    def cpu_ms(self) -> float | None:
        cpuacct = self.paths.get("cpuacct")
        return int((cpuacct / "cpuacct.usage").read_text()) / 1e6 if cpuacct else None

    def pids_refused(self) -> bool:
        pids = self.paths.get("pids")
        return bool(pids) and int((pids / "pids.events").read_text().split()[1]) > 0

    def remove(self) -> None:
        for path in self.paths.values():
            _kill_and_remove(path)


def _kill_and_remove(path: Path) -> None:
    for _ in range(200):
        try:
            path.rmdir()
            return
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.005)
    log.error("strategy sandbox: cgroup %s still busy; left behind", path)


# ---- the command ----------------------------------------------------------------------------


def _runtime_roots() -> list[str]:
    """Directories the interpreter and its packages live in (bound read-only), outermost only."""
    roots = {"/usr", os.path.realpath(sys.base_prefix), sys.prefix, *site.getsitepackages()}
    roots = {os.path.realpath(r) if r != sys.prefix else r for r in roots if os.path.isdir(r)}
    roots = sorted(r for r in roots if not any(r != o and r.startswith(o.rstrip("/") + "/") for o in roots))
    from xcoin_trading.config import get_settings

    home = str(get_settings().home)
    for root in roots:  # a venv inside XCOIN_HOME (or the reverse) would show the store to strategies
        if home == root or home.startswith(root.rstrip("/") + "/") or root.startswith(home + "/"):
            raise ConfigError(f"the Python runtime at {root} overlaps XCOIN_HOME {home}: move one of them")
    return roots


def _bwrap_prefix(uid: int, limits: SandboxLimits | None) -> list[str]:
    tmp_bytes = (limits.output_mb if limits else 16) * 1024 * 1024
    args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session"]  # fmt: skip
    # The private /tmp first: a runtime that lives under /tmp (a CI clone) is bound on top of it.
    args += ["--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    parents: set[str] = {"/tmp"}
    for root in _runtime_roots():
        parent = os.path.dirname(root)
        while parent not in ("/", "") and parent not in parents:  # bwrap would create them 0700
            parents.add(parent)
            parent = os.path.dirname(parent)
    for d in sorted(parents):
        args += ["--perms", "0755", "--dir", d]
    for root in _runtime_roots():
        args += ["--ro-bind", root, root]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc", "--dev", "/dev",
             "--perms", "0755", "--dir", os.path.dirname(CHILD_INSIDE), "--ro-bind", str(CHILD), CHILD_INSIDE,
             "--chdir", "/tmp", "--",
             "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
    if _nested_userns_block:
        args += NO_NESTED_USERNS
    return args


# Run as the run's uid inside the sandbox: a user namespace mapping that uid to itself in which no
# further user namespace can be made, so the strategy cannot become "root" of a namespace of its own
# (no host privilege either way, but less kernel surface). Needs unprivileged user namespaces.
NO_NESTED_USERNS = [
    "bwrap",
    "--unshare-user",
    "--disable-userns",
    "--bind",
    "/",
    "/",
    "--die-with-parent",
    "--",
]
_nested_userns_block = False


def _shell_limits(limits: SandboxLimits, cgroups: _RunCgroups | None) -> str:
    """A `sh -c` prologue: join the run's cgroups, set rlimits (inherited by everything after)."""
    steps = [f"echo $$ > {shlex.quote(f)}" for f in (cgroups.procs_files() if cgroups else [])]
    steps += [f"ulimit -S -t {limits.cpu_seconds}", f"ulimit -H -t {limits.cpu_seconds + 1}",
              f"ulimit -f {limits.output_mb * 1024}", "ulimit -c 0", "ulimit -n 256"]  # fmt: skip
    # Per process too: a single oversized allocation fails at once (MemoryError → exit 4) instead of
    # first paging gigabytes into the cgroup, which bounds what the run's processes hold together.
    # Twice the limit: address space includes reservations never touched (thread stacks, arenas).
    factor = 2 if cgroups and "memory" in cgroups.paths else 1
    steps.append(f"ulimit -v {limits.memory_mb * 1024 * factor}")
    return " && ".join(steps) + ' && exec "$@"'


# ---- one run --------------------------------------------------------------------------------


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


@dataclass
class _Started:
    """A sandbox started and importing (or waiting for its job on stdin): used for one job only."""

    proc: subprocess.Popen
    answer_r: int
    limits: SandboxLimits
    slot: _UidSlot | None
    cgroups: _RunCgroups | None

    def close(self) -> None:
        if self.answer_r >= 0:
            os.close(self.answer_r)
            self.answer_r = -1
        _kill(self.proc)
        if self.cgroups:
            self.cgroups.remove()
        if self.slot:
            self.slot.release()


def _start(limits: SandboxLimits) -> _Started:
    slot = _UidSlot() if isolation_available() else None
    cgroups = None
    try:
        if slot and cgroups_available():
            cgroups = _RunCgroups(f"xcoin-sandbox-{slot.uid}", limits)
        prefix = _bwrap_prefix(slot.uid, limits) if slot else []
        if slot and cgroups is None and shutil.which("prlimit"):  # per uid, and the uid is the run's own
            prefix = ["prlimit", f"--nproc={limits.pids}", "--", *prefix]
        child = CHILD_INSIDE if slot else str(CHILD)
        answer_r, answer_w = os.pipe()
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp" if slot else "/nonexistent", "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "POLARS_MAX_THREADS": "2"}  # fmt: skip
        cmd = ["/bin/sh", "-c", _shell_limits(limits, cgroups), "sh", *prefix, sys.executable, "-I", child,
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
    job = _job(source, candles, params)
    run = _take_spare(limits) or _start(limits)
    try:
        outcome = _exchange(run.proc, run.answer_r, job, timeout, limits, candles.height, run.cgroups)
        _kill(run.proc)
        return _classify(code, outcome, limits, run.cgroups, candles.height, run.slot)
    finally:
        run.close()


def _job(source: str, candles: pl.DataFrame, params: dict[str, Any]) -> bytes:
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


def _exchange(proc: subprocess.Popen, answer_r: int, job: bytes, timeout: float, limits: SandboxLimits,
              rows: int, cgroups: _RunCgroups | None = None) -> _Outcome:  # fmt: skip
    """Write the job, read the answer and output up to their caps, until exit, the deadline or (with
    a cpuacct cgroup) the run's processes together using up `limits.cpu_seconds`."""
    out_fd = proc.stdout.fileno()
    caps = {answer_r: answer_limit(rows, limits), out_fd: limits.stdout_kb * 1024}
    got: dict[int, list[bytes]] = {fd: [] for fd in caps}
    sizes = dict.fromkeys(caps, 0)
    end = time.monotonic() + timeout
    stdin = proc.stdin.fileno()
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
                        proc.stdin.close()
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
        if not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
    if stopped:
        _kill(proc)
    return _Outcome(b"".join(got[answer_r]), b"".join(got[out_fd]), proc.poll(), stopped)


def _kill(proc: subprocess.Popen) -> None:
    """The whole process group (bwrap's --die-with-parent takes the pid namespace with it)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout and not proc.stdout.closed:
        proc.stdout.close()


def _classify(code: str, out: _Outcome, limits: SandboxLimits, cgroups: _RunCgroups | None, rows: int,
              slot: _UidSlot | None) -> SandboxRun:  # fmt: skip
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
