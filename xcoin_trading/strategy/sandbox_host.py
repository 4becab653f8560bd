"""How one strategy run is confined on this host: its own uid (a flock'd slot), its own cgroups, the
bubblewrap + setpriv command and the rlimits prologue. Kept apart from the job protocol so the
confinement can be read (and audited) on its own; docs/security.md ("Strategy sandbox").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import shlex
import shutil
import signal
import site
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xcoin_trading.errors import ConfigError, XcoinError

log = logging.getLogger("xcoin_trading.strategy.sandbox")  # the name operators already filter on
CHILD = Path(__file__).with_name("_sandbox_child.py")
CHILD_INSIDE = "/xcoin/child.py"
LOCK_DIR = Path(os.environ.get("XCOIN_SANDBOX_LOCK_DIR", "/run/xcoin-sandbox"))
CGROUP_ROOT = Path("/sys/fs/cgroup")


def uid_range() -> range:
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


# ---- what this host offers (checked once) ---------------------------------------------------


_mode: str | None = None
_cgroups_ok: bool | None = None


def isolation_mode() -> str:
    """ "bwrap" (root + bubblewrap + setpriv) or "rlimits" (a warning is logged once)."""
    global _mode, _nested_userns_block
    if _mode is None:
        _mode = "rlimits"
        if os.geteuid() == 0 and shutil.which("bwrap") and shutil.which("setpriv"):
            probe = subprocess.run(bwrap_prefix(min(uid_range()), None) + ["/bin/true"], capture_output=True)
            if probe.returncode == 0:
                _mode = "bwrap"
                inner = subprocess.run(
                    bwrap_prefix(min(uid_range()), None) + NO_NESTED_USERNS + ["/bin/true"],
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


def own_cgroup(controller: str) -> Path | None:
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
            (p := own_cgroup(c)) is not None and os.access(p, os.W_OK) for c in ("memory", "pids")
        )
        if not _cgroups_ok:
            log.warning("strategy sandbox: cgroups not writable; memory/process limits are per process")
    return _cgroups_ok


# ---- one run's uid slot and cgroups ----------------------------------------------------------


class UidSlot:
    """An exclusive uid for one run, across threads and processes (flock on a per-uid file)."""

    def __init__(self) -> None:
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        uids = uid_range()
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


class RunCgroups:
    def __init__(self, name: str, limits: SandboxLimits) -> None:
        self.paths: dict[str, Path] = {}
        for controller in ("memory", "pids", "cpu", "cpuacct"):
            base = own_cgroup(controller)
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


def bwrap_prefix(uid: int, limits: SandboxLimits | None) -> list[str]:
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


def shell_limits(limits: SandboxLimits, cgroups: RunCgroups | None) -> str:
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
