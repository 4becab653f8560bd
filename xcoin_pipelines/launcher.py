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

    def __init__(self, origin: Any, preload: Sequence[str]) -> None:
        python_origin = origin.repository_origin
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        pointer = python_origin.code_pointer
        cwd = getattr(pointer, "working_directory", None) or os.getcwd()
        self.proc = subprocess.Popen(
            [python_origin.executable_path, "-m", "xcoin_pipelines.launcher", str(req_r), str(rep_w),
             serialize_value(origin), json.dumps(list(preload))],
            pass_fds=(req_r, rep_w), cwd=cwd, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(req_r)
        os.close(rep_w)
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

    def __init__(self, inst_data: ConfigurableClassData | None = None, preload: Sequence[str] = ()):
        super().__init__(inst_data=inst_data)
        self._preload = tuple(preload)
        self._warm: dict[str, tuple[str, _WarmProcess]] = {}  # location -> (code server id, process)
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls) -> Any:
        return {"preload": dg.Field([str], is_required=False, default_value=[])}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, preload=config_value.get("preload", []))

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
            current = (server_id, _WarmProcess(origin, self._preload))
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
        os.kill(pid, 15)  # SIGTERM: Dagster's worker turns it into an interrupt → RUN_CANCELED
        return True

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


def _serve(req_fd: int, rep_fd: int, origin_json: str, preload: list[str]) -> None:
    """The warm process: load, say ready, then fork one worker per request line until EOF."""
    import importlib
    import signal

    def reply(answer: dict[str, Any]) -> None:
        os.write(rep_fd, json.dumps(answer).encode() + b"\n")

    try:
        from dagster._cli.api import _execute_run_command_body  # noqa: F401 - what each worker runs
        from dagster._core.origin import JobPythonOrigin
        from dagster._serdes import deserialize_value
        from dagster._utils.hosted_user_process import recon_job_from_origin

        recon_job_from_origin(deserialize_value(origin_json, JobPythonOrigin)).get_definition()
        for module in preload:
            importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - the launcher falls back and logs this
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return
    reply({"ready": True})
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped as they exit
    with os.fdopen(req_fd, "rb", buffering=0) as requests:
        for line in requests:
            request = json.loads(line)
            if _threads() != 1:
                reply({"error": f"the warm process runs {_threads()} threads; forking is unsafe"})
                return
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(rep_fd)
                    requests.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run waits for its own children
                    code = _run_worker(request)
                except BaseException:  # noqa: BLE001 - a worker never returns into the loop
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            reply({"pid": pid})


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
