"""A run launcher that starts each run worker by forking a warm process instead of spawning a new
Python (which imports Dagster, the code location, polars, numba and matplotlib again: ~4 CPU-s of
every UI click → backtest success).

The warm process (`python -m xcoin_pipelines.launcher`) is started by the launcher in the process
that launches runs (the daemon's run queue), once per code location and code server: it loads the
job's code location, imports `preload`, then waits. Per run it forks a child that does exactly what
`dagster api execute_run` does (`_execute_run_command_body`: open the instance, execute the run,
write every event to the event log), so run status, logs, failures and compute logs are Dagster's own.

- cancellation: `terminate` marks the run CANCELING and sends SIGTERM to the worker's pid (stored in
  run tags); Dagster's worker maps SIGTERM to an interrupt and reports the run CANCELED;
- health: run monitoring asks `check_run_worker_health`; a worker whose pid is gone (killed, OOM)
  while its run is still STARTED is reported FAILED and the monitor fails the run;
- code reloads: a new code server (reload in the UI) gets a new warm process; the old one exits;
- anything wrong with the warm process (not started, died, a thread where fork is unsafe, no pid back)
  launches the run the default way (a fresh process from the code server), with an engine event.

Fork safety: the warm process only imports (no polars query, no numba call, no open instance) and
refuses to fork when it has more than one OS thread (a polars/rayon pool would hang in the child).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._serdes import ConfigurableClassData, serialize_value

PID_TAG = "xcoin/worker_pid"
START_TAG = "xcoin/worker_start"  # the pid's start time (clock ticks since boot): pids are reused
READY_TIMEOUT_S = 300.0  # a cold code location import on a loaded 2-core host
FORK_TIMEOUT_S = 10.0
CANCEL_GRACE_S = 30.0  # then the worker is killed
CANCEL_REPEAT_S = 3.0


def _proc_start(pid: int) -> str | None:
    """Start time of a live process (field 22 of /proc/<pid>/stat), None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return None if fields[0] == "Z" else fields[19]


class _WarmProcess:
    """One warm process and its two pipes (requests in, pids out)."""

    def __init__(self, origin: Any, instance_ref: Any, config: Mapping[str, Any]) -> None:
        python_origin = origin.repository_origin
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        pointer = python_origin.code_pointer
        cwd = getattr(pointer, "working_directory", None) or os.getcwd()
        self.proc = subprocess.Popen(
            [python_origin.executable_path, "-m", "xcoin_pipelines.launcher", str(req_r), str(rep_w)],
            pass_fds=(req_r, rep_w), cwd=cwd, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(req_r)
        os.close(rep_w)
        # on the pipe, not in argv (which every local user can read): the instance may hold a password
        setup = {"origin": serialize_value(origin), "instance_ref": serialize_value(instance_ref),
                 "config": dict(config)}  # fmt: skip
        os.write(self._req_w, json.dumps(setup).encode() + b"\n")
        self._buf = b""
        self.ready = False

    def _reply(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._rep_r], [], [], left)[0]:
                raise TimeoutError(f"no answer from the warm run process in {timeout:.0f} s")
            chunk = os.read(self._rep_r, 65536)
            if not chunk:
                raise RuntimeError(f"the warm run process exited ({self.proc.poll()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def fork(self, run_id: str, instance_ref: Any) -> int:
        if not self.ready:
            answer = self._reply(READY_TIMEOUT_S)
            if "error" in answer:
                raise RuntimeError(answer["error"])
            self.ready = True
        request = {"run_id": run_id, "instance_ref": serialize_value(instance_ref)}
        os.write(self._req_w, json.dumps(request).encode() + b"\n")
        answer = self._reply(FORK_TIMEOUT_S)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return int(answer["pid"])

    def close(self) -> None:
        """Closing its request pipe ends it; the workers it forked run on."""
        for fd in (self._req_w, self._rep_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WarmRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher whose run workers are forked from a warm process (module docstring)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, **config: Any):
        super().__init__(inst_data=inst_data)
        self._config = {"preload": [], "spare": True, "spare_imports": [], **config}
        self._warm: dict[str, tuple[str, _WarmProcess]] = {}  # location -> (code server id, process)
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls) -> Any:
        return {
            "preload": dg.Field([str], is_required=False, default_value=[], description=(
                "Modules imported by the warm process (none that starts a thread)."
            )),
            "spare": dg.Field(bool, is_required=False, default_value=True, description=(
                "Keep one forked worker warmed up ahead of the next run."
            )),
            "spare_imports": dg.Field([str], is_required=False, default_value=[], description=(
                "What the spare imports or calls (`module:function`) while it waits: threads allowed."
            )),
        }  # fmt: skip

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def _warm_process(self, context: LaunchRunContext) -> _WarmProcess:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None or context.workspace is None:
            raise RuntimeError("the run has no code origin or workspace")
        location = run.remote_job_origin.repository_origin.code_location_origin.location_name  # type: ignore[union-attr]
        server_id = str(getattr(context.workspace.get_code_location(location), "server_id", ""))
        current = self._warm.get(location)
        if current is not None and (current[0] != server_id or current[1].proc.poll() is not None):
            current[1].close()  # code reloaded (new code server) or the warm process died
            current = None
        if current is None:
            current = (server_id, _WarmProcess(origin, self._instance.get_ref(), self._config))
            self._warm[location] = current
        return current[1]

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        try:
            with self._lock:
                warm = self._warm_process(context)
                pid = warm.fork(run.run_id, self._instance.get_ref())
        except Exception as exc:  # noqa: BLE001 - the default launch still runs the job
            with self._lock:  # the next launch starts a new warm process
                self._close_location(run)
            self._instance.report_engine_event(
                f"Warm run process unavailable ({exc}); launching a fresh run worker.", run, cls=type(self)
            )
            super().launch_run(context)
            return
        start = _proc_start(pid) or ""
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid), START_TAG: start})
        self._instance.report_engine_event(
            f"Forked run worker (pid: {pid}) from the warm run process.", run, cls=type(self)
        )

    def _close_location(self, run: dg.DagsterRun) -> None:
        origin = run.remote_job_origin
        location = origin.repository_origin.code_location_origin.location_name if origin else None
        current = self._warm.pop(location, None) if location else None
        if current is not None:
            current[1].close()

    def _worker(self, run_id: str) -> tuple[int, str] | None:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or PID_TAG not in run.tags:
            return None
        return int(run.tags[PID_TAG]), run.tags.get(START_TAG, "")

    def terminate(self, run_id: str) -> bool:
        worker = self._worker(run_id)
        if worker is None:  # launched the default way
            return super().terminate(run_id)
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid, start = worker
        if _proc_start(pid) != start:
            self._instance.report_engine_event(
                f"Run worker (pid: {pid}) is gone; nothing to terminate.", run, cls=type(self)
            )
            return False
        os.kill(pid, signal.SIGTERM)  # Dagster's worker turns it into an interrupt → RUN_CANCELED
        threading.Thread(target=self._insist, args=(run_id, pid, start), daemon=True).start()
        return True

    def _insist(self, run_id: str, pid: int, start: str) -> None:
        """Python may run the interrupt inside a garbage-collector callback, which swallows it
        ("Exception ignored in …") and the run carries on: repeat the signal while the run is still
        going, kill the worker after CANCEL_GRACE_S, and end a run whose worker died without
        reporting (a spare still importing has no handler yet) as Dagster's monitor would."""
        deadline = time.monotonic() + CANCEL_GRACE_S
        while True:
            time.sleep(CANCEL_REPEAT_S)
            run = self._instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                return
            if _proc_start(pid) != start:
                run = self._instance.get_run_by_id(run_id)  # it may have ended the run as it exited
                if run is not None and not run.is_finished:
                    self._instance.report_run_canceled(
                        run, message=f"Run worker (pid: {pid}) ended without reporting the cancellation."
                    )
                return
            os.kill(pid, signal.SIGKILL if time.monotonic() > deadline else signal.SIGTERM)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        worker = self._worker(run.run_id)
        if worker is None:  # the default launcher's worker: not checked, as before
            return CheckRunHealthResult(WorkerStatus.RUNNING, "launched by the code server; not checked")
        pid, start = worker
        if _proc_start(pid) == start:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker (pid: {pid}) exited without ending the run",
            run_worker_id=str(pid),
        )

    def dispose(self) -> None:
        with self._lock:
            for _, process in self._warm.values():
                process.close()
            self._warm.clear()
        super().dispose()


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _run_worker(request: dict[str, Any]) -> int:
    """In the forked child: what `dagster api execute_run` does with its arguments."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance, InstanceRef
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():
        ref = deserialize_value(request["instance_ref"], InstanceRef)
        with DagsterInstance.from_ref(ref) as instance:
            return _execute_run_command_body(
                request["run_id"], instance, lambda _: None, set_exit_code_on_failure=True
            )


def _warm_up(entries: Sequence[str]) -> None:
    """Import `module`, or call `module:attr.path` (e.g. numba's registry refresh)."""
    import importlib

    for entry in entries:
        module, _, attrs = entry.partition(":")
        target: Any = importlib.import_module(module)
        if attrs:
            for attr in attrs.split("."):
                target = getattr(target, attr)
            target()


def _child(close: Sequence[int]) -> None:
    """Just forked: drop the warm process's pipes and its SIGCHLD reaper (a run waits for its own)."""
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _exit_after(work: Any) -> None:
    code = 1
    try:
        code = work()
    except BaseException:  # noqa: BLE001 - a forked child never returns into the warm loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _spare_main(req_fd: int, spare_imports: Sequence[str]) -> int:
    """A spare worker: warm up (threads are fine now: it never forks again), then run the one
    request the warm process hands it; EOF (the warm process is gone) ends it."""
    try:
        _warm_up(spare_imports)
    except Exception:  # noqa: BLE001 - the run imports what it needs itself, only slower
        import traceback

        traceback.print_exc()
    with os.fdopen(req_fd, "rb") as pipe:
        line = pipe.readline()
    return _run_worker(json.loads(line)) if line else 0


def _serve(req_fd: int, rep_fd: int) -> None:
    """The warm process: load, say ready, then answer each request line with a worker's pid until EOF.
    The worker is the spare forked after the previous request (already warm), else a fresh fork."""

    def reply(answer: dict[str, Any]) -> None:
        os.write(rep_fd, json.dumps(answer).encode() + b"\n")

    # Ctrl-C on `make dev` reaches the whole process group: this process and its spare end when the
    # daemon does (EOF); a run worker installs Dagster's own handler for the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = os.fdopen(req_fd, "rb", buffering=0)
    setup = json.loads(requests.readline())
    config: dict[str, Any] = setup["config"]
    try:
        from dagster._cli.api import _execute_run_command_body  # noqa: F401 - what each worker runs
        from dagster._core.instance import InstanceRef
        from dagster._core.origin import JobPythonOrigin
        from dagster._serdes import deserialize_value
        from dagster._utils.hosted_user_process import recon_job_from_origin

        recon_job_from_origin(deserialize_value(setup["origin"], JobPythonOrigin)).get_definition()
        ref = deserialize_value(
            setup["instance_ref"], InstanceRef
        )  # its storages' modules, not an open instance
        _warm_up([v.module_name for v in ref if isinstance(v, ConfigurableClassData)])
        _warm_up(config.get("preload", []))
    except Exception as exc:  # noqa: BLE001 - the launcher falls back and logs this
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return
    if _threads() != 1:
        reply({"error": f"the warm process runs {_threads()} threads after loading; forking is unsafe"})
        return
    reply({"ready": True})

    exited: set[int] = set()

    def reap(_signo: int, _frame: Any) -> None:
        # waited for, not SIG_IGN: a reaped worker's CPU time adds to this process's children's
        # (benchmarks/dagster_ui.py reads it)
        with contextlib.suppress(ChildProcessError):
            while pid := os.waitpid(-1, os.WNOHANG)[0]:
                exited.add(pid)

    signal.signal(signal.SIGCHLD, reap)
    spares = bool(config.get("spare", True))
    spare: tuple[int, int] | None = None  # (pid, write end of its request pipe)

    def fork_spare() -> tuple[int, int] | None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child([req_fd, rep_fd, w])
            _exit_after(lambda: _spare_main(r, config.get("spare_imports", [])))
        os.close(r)
        return pid, w

    if spares:
        spare = fork_spare()
    with requests:
        for line in requests:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = 0
            if spare is not None:
                if spare[0] not in exited:
                    with contextlib.suppress(OSError):  # it died between the check and the write
                        os.write(spare[1], line if line.endswith(b"\n") else line + b"\n")
                        pid = spare[0]
                os.close(spare[1])
                spare = None
            if not pid:
                if _threads() != 1:
                    reply({"error": f"the warm process runs {_threads()} threads; forking is unsafe"})
                    return
                pid = os.fork()
                if pid == 0:
                    _child([req_fd, rep_fd])
                    _exit_after(lambda request=json.loads(line): _run_worker(request))
            reply({"pid": pid})
            if spares:
                spare = fork_spare()
    if spare is not None:
        os.close(spare[1])  # EOF: the idle spare exits


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
