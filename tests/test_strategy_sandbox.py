"""User strategy code runs locked down: bad behaviour becomes a clear error, never a hang or a leak."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from xcoin_trading.strategy import sandbox, sandbox_host
from xcoin_trading.strategy.answer import BadAnswer, read_answer
from xcoin_trading.strategy.contract import StrategyError
from xcoin_trading.strategy.sandbox import SandboxLimits, isolation_available, run_sandboxed
from xcoin_trading.strategy.validation import sample_candles, validate_strategy

FAST = SandboxLimits(wall_seconds=20, cpu_seconds=5)
CANDLES = sample_candles(120, seed=7)

GOOD = """
import polars as pl
DEFAULT_PARAMS = {"n": 5}
def signals(candles, params):
    print("debug output \\x00\\xff {not json")
    up = pl.col("close") > pl.col("close").rolling_mean(params["n"])
    return candles.select(
        pl.when(up).then(pl.lit("LONG")).otherwise(pl.lit("HOLD")).alias("action"),
        (pl.col("close") * 0.98).alias("stop_loss"),
        (pl.col("close") * 1.04).alias("take_profit"),
    )
"""
# Tenant A of the attack tests: honest, and still running while tenant B attacks.
SLOW_GOOD = GOOD.replace(
    "def signals(candles, params):", "def signals(candles, params):\n    import time; time.sleep(2)"
)

root_only = pytest.mark.skipif(
    os.geteuid() != 0 or not isolation_available(), reason="bubblewrap isolation needs root and bwrap"
)


def _expected(candles: pl.DataFrame) -> pl.DataFrame:
    """GOOD's signals computed here, independently (numpy), to compare the sandbox's answer with."""
    close = candles["close"].to_numpy()
    mean = np.convolve(close, np.ones(5) / 5, mode="full")[: len(close)]
    up = np.r_[np.zeros(4, bool), close[4:] > mean[4:]]
    return pl.DataFrame(
        {"action": np.where(up, "LONG", "HOLD"), "stop_loss": close * 0.98, "take_profit": close * 1.04}
    )


def _run(source: str, limits: SandboxLimits = FAST, code: str = "user-strat"):
    return run_sandboxed(code, source, CANDLES, {}, limits)


def _sandbox_processes() -> list[int]:
    """Live processes under a sandbox uid, idle spares excluded (zombies are dead: the container's
    init reaps what a killed pid namespace leaves, in its own time)."""
    spares = {s.slot.uid for pool in sandbox._spares.values() for s in pool if s.slot}
    uids = sandbox_host.uid_range()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            uid = int(status.split("\nUid:")[1].split()[0])
            state = status.split("\nState:")[1].split()[0]
        except (OSError, IndexError, ValueError):
            continue
        if uid in uids and uid not in spares and state != "Z":
            found.append(int(entry.name))
    return found


def _alongside(attack: str, limits: SandboxLimits = FAST) -> StrategyError | sandbox.SandboxRun:
    """Run honest tenant A and attacker B at once; A's answer must be exactly its own, and nothing
    of either run (process, cgroup) is left on the host afterwards. Returns B's outcome."""
    cgroups_before = _run_cgroups()
    with ThreadPoolExecutor(2) as pool:
        honest = pool.submit(run_sandboxed, "tenant-a", SLOW_GOOD, CANDLES, {}, FAST)
        hostile = pool.submit(run_sandboxed, "tenant-b", attack, CANDLES, {}, limits)
        a = honest.result()
        try:
            b = hostile.result()
        except StrategyError as exc:
            b = exc
    assert_frame_equal(a.signals, _expected(CANDLES), check_exact=False, rtol=1e-12)
    assert _sandbox_processes() == []
    assert _run_cgroups() <= cgroups_before
    return b


def _run_cgroups() -> set[Path]:
    """Per-run cgroups of uids no run holds now (pids/cpu may be the host's root cgroup, shared with
    other workers' live runs; a crashed earlier process may have left some: compared before/after)."""
    import fcntl

    found = set()
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        base = sandbox_host.own_cgroup(controller)
        if base is None or not base.exists():
            continue
        for path in base.glob("xcoin-sandbox-*"):
            fd = os.open(
                sandbox_host.LOCK_DIR / f"uid-{path.name.rsplit('-', 1)[1]}.lock", os.O_RDWR | os.O_CREAT
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found.add(path)  # nobody runs under this uid: the cgroup is a leftover
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    return found


# ---- the contract's hostile cases keep their clear errors -------------------------------------


def test_a_good_strategy_returns_its_signals_and_its_prints_are_only_reported():
    run = _run(GOOD)
    assert_frame_equal(run.signals, _expected(CANDLES), check_exact=False, rtol=1e-12)
    assert "debug output" in run.stdout


def test_a_strategy_that_raises_names_the_exception_and_line_as_its_own_report():
    with pytest.raises(
        StrategyError,
        match=r'raised an exception \(its own report: "ZeroDivisionError: division by zero at line 3"\)',
    ):
        _run("def signals(c, p):\n    x = 1\n    return x / 0\n")


def test_a_strategy_that_loops_forever_is_killed():
    with pytest.raises(StrategyError, match="CPU limit of 2 s"):
        _run(
            "def signals(c, p):\n    while True:\n        pass\n",
            SandboxLimits(wall_seconds=20, cpu_seconds=2),
        )


def test_a_strategy_that_sleeps_forever_is_killed_by_the_wall_clock():
    with pytest.raises(StrategyError, match=r"timed out after 2 s"):
        _run(
            "import time\ndef signals(c, p):\n    time.sleep(60)\n",
            SandboxLimits(wall_seconds=2, cpu_seconds=3),
        )


def test_the_wall_clock_runs_from_the_deadline_given_by_the_caller():
    import time

    with pytest.raises(StrategyError, match=r"timed out after 1\.\d+ s"):
        run_sandboxed("late", "import time\ndef signals(c, p):\n    time.sleep(60)\n", CANDLES, {}, FAST,
                      deadline=time.time() + 1.5)  # fmt: skip
    with pytest.raises(StrategyError, match="was not started"):
        run_sandboxed("late", GOOD, CANDLES, {}, FAST, deadline=time.time() - 1)


def test_a_strategy_that_allocates_4gb_hits_its_memory_limit():
    with pytest.raises(StrategyError, match="exceeded its memory limit of 512 MB"):
        _run(
            "def signals(c, p):\n    block = bytearray(4 * 1024**3)\n    return block\n",
            SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=512),
        )


@root_only
def test_a_strategy_cannot_lift_its_own_limits_or_regain_privileges():
    probe = """
import os, resource, subprocess
def signals(c, p):
    status = open('/proc/self/status').read()
    caps = sorted(l.split()[1] for l in status.splitlines() if l.startswith('Cap'))
    steps = [f"uid={os.getuid()} caps={set(caps)}"]
    nested = subprocess.run(['unshare', '--user', '--map-root-user', 'true'], capture_output=True)
    steps.append('userns ALLOWED' if nested.returncode == 0 else 'userns refused')
    for name, act in [('cpu', lambda: resource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))),
                      ('setuid', lambda: os.setuid(0)), ('unshare', lambda: os.unshare(os.CLONE_NEWNET)),
                      ('cgroup', lambda: open('/sys/fs/cgroup/memory/memory.limit_in_bytes', 'w').write('1'))]:
        try:
            act()
            steps.append(name + ' ALLOWED')
        except Exception as exc:
            steps.append(name + ' refused')
    raise RuntimeError(' '.join(steps))
"""
    with pytest.raises(StrategyError) as err:
        _run(probe)
    report = str(err.value)
    assert "caps={'0000000000000000'}" in report, report
    assert "uid=0 " not in report and "ALLOWED" not in report, report


def test_a_strategy_cannot_read_the_master_key_from_its_environment(monkeypatch):
    monkeypatch.setenv("XCOIN_ENCRYPTION_KEY", "c2VjcmV0LWtleS1tYXRlcmlhbA==")
    monkeypatch.setenv("COINDCX_API_SECRET", "exchange-secret")
    source = "import os\ndef signals(c, p):\n    return os.environ['XCOIN_ENCRYPTION_KEY']\n"
    with pytest.raises(StrategyError, match="KeyError: 'XCOIN_ENCRYPTION_KEY'") as err:
        _run(source)
    assert "c2VjcmV0" not in str(err.value)
    leak = "import os\ndef signals(c, p):\n    raise ValueError(sorted(k for k in os.environ if 'XCOIN' in k or 'COINDCX' in k))\n"
    with pytest.raises(StrategyError, match=r"ValueError: \[\]"):
        _run(leak)


@root_only
def test_as_root_the_strategy_has_no_network():
    # bwrap brings up a loopback of the run's own: nothing listens there, and the host is unreachable.
    with pytest.raises(StrategyError, match="Network is unreachable|Connection refused"):
        _run(
            "import socket\ndef signals(c, p):\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n"
        )


def test_a_strategy_returning_the_wrong_type_is_refused():
    with pytest.raises(StrategyError, match="must return a polars DataFrame, got dict"):
        _run("def signals(c, p):\n    return {'action': 'LONG'}\n")


# ---- attack classes of issue 13: each next to an honest tenant --------------------------------


@root_only
def test_a_runtime_that_overlaps_xcoin_home_is_refused_rather_than_shown(monkeypatch):
    from xcoin_trading.config import reset_settings
    from xcoin_trading.errors import ConfigError

    monkeypatch.setenv("XCOIN_HOME", os.path.join(sys.prefix, "xcoin-home"))
    reset_settings()
    try:
        with pytest.raises(ConfigError, match="overlaps XCOIN_HOME"):
            _run(GOOD)
    finally:
        monkeypatch.undo()
        reset_settings()


@root_only
def test_uids_are_never_shared_by_two_live_runs():
    who = "import os, time\ndef signals(c, p):\n    time.sleep(1)\n    raise RuntimeError(f'uid {os.getuid()} {os.getgid()}')\n"
    with ThreadPoolExecutor(6) as pool:
        errors = [f.exception() for f in [pool.submit(_run, who) for _ in range(6)]]
    ids = {str(e).split("uid ")[1].split('"')[0] for e in errors}
    assert len(ids) == 6
    assert all(int(i.split()[0]) in sandbox_host.uid_range() and i.split()[0] == i.split()[1] for i in ids)


@root_only
def test_a_spare_sandbox_serves_one_job_only_under_its_own_uid():
    who = "import os\ndef signals(c, p):\n    open('/tmp/mark', 'x').write('x')\n    raise RuntimeError(f'uid {os.getuid()}')\n"
    cgroups_before = _run_cgroups()
    sandbox.prewarm(FAST, 2)
    assert len(sandbox._spares[FAST]) == 2
    errors = [pytest.raises(StrategyError, _run, who).value for _ in range(3)]  # 2 spares, then a cold one
    assert len({str(e).split("uid ")[1] for e in errors}) == 3  # /tmp/mark never existed already either
    assert sandbox._spares[FAST] == []
    sandbox.prewarm(FAST, 1)
    sandbox.discard_spares()
    assert _sandbox_processes() == []
    assert _run_cgroups() <= cgroups_before


@root_only
def test_a_uid_slot_held_by_another_process_is_never_handed_out(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox_host, "LOCK_DIR", tmp_path)
    monkeypatch.setenv("XCOIN_SANDBOX_UIDS", "210000-210001")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(tmp_path / 'uid-210000.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == b"held\n"
        slot = sandbox_host.UidSlot()
        assert slot.uid == 210001
        with pytest.raises(Exception, match="no free sandbox uid in 210000-210001"):
            sandbox_host.UidSlot()
        slot.release()
        assert sandbox_host.UidSlot().uid == 210001
    finally:
        holder.kill()
        holder.wait()


@root_only
def test_tampering_with_another_runs_processes_and_files_changes_nothing():
    look = """
import os
def signals(c, p):
    seen = sorted(int(x) for x in os.listdir('/proc') if x.isdigit())
    hits = []
    for top in ('/tmp', '/work', '/root', '/run', '/var', '/home', '/xcoin', '/usr'):
        for d, _, files in os.walk(top):
            for f in files:
                try:
                    open(os.path.join(d, f), 'a').close(); hits.append(os.path.join(d, f))
                except OSError:
                    pass
    raise RuntimeError(f'pids {seen} writable {hits[:5]}')
"""
    outcome = _alongside(look)
    # B sees only its own pid namespace (bwrap's init, the inner bwrap, itself) and can write nowhere
    # outside its own tmpfs; A (running meanwhile) is neither visible nor touched.
    assert re.search(r"pids \[1, 2(, 3)?\] writable \[\]", str(outcome)), outcome
    kill_all = "import os, signal\ndef signals(c, p):\n    os.kill(-1, signal.SIGKILL)\n"
    outcome = _alongside(kill_all)  # every process B may signal: its own run only
    assert "was killed by signal SIGKILL" in str(outcome), outcome


@root_only
def test_a_background_or_double_forked_process_is_gone_when_the_run_ends():
    attack = GOOD.replace(
        "def signals(candles, params):",
        "import os, time\ndef signals(candles, params):\n"
        "    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        "            while True:\n                time.sleep(0.1)\n        os._exit(0)\n",
    )
    outcome = _alongside(attack)
    assert isinstance(outcome, sandbox.SandboxRun)  # its answer counts; its daemon does not survive


@root_only
def test_the_store_the_master_key_and_the_parent_are_invisible(tmp_path, monkeypatch):
    home = tmp_path / "xcoin-home"
    home.mkdir()
    (home / "xcoin.sqlite").write_text("argon2-hashes and broker secrets")
    (home / "master.key").write_text("top-secret")
    os.chmod(tmp_path, 0o755)
    os.chmod(home, 0o755)
    os.chmod(home / "xcoin.sqlite", 0o644)  # even world-readable
    attack = f"""
import os
def signals(c, p):
    found = []
    for path in ({str(home / "xcoin.sqlite")!r}, {str(home / "master.key")!r}, '/proc/{os.getpid()}/environ',
                 '/proc/{os.getppid()}/cmdline', {str(sandbox_host.LOCK_DIR)!r}):
        try:
            found.append(open(path).read()[:20] if not os.path.isdir(path) else os.listdir(path))
        except OSError as exc:
            found.append(type(exc).__name__)
    raise RuntimeError(str(found))
"""
    outcome = _alongside(attack)
    assert "secret" not in str(outcome) and "argon2" not in str(outcome)
    assert (
        "['FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError']"
        in str(outcome)
    )


@root_only
def test_unix_sockets_and_loopback_are_unreachable(tmp_path):
    os.chmod(tmp_path, 0o777)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "worker.sock"))
    os.chmod(tmp_path / "worker.sock", 0o777)
    unix.listen()
    tcp = socket.create_server(("127.0.0.1", 0))
    attack = f"""
import socket
def signals(c, p):
    out = []
    for family, addr in ((socket.AF_UNIX, {str(tmp_path / "worker.sock")!r}), (socket.AF_INET, ('127.0.0.1', {tcp.getsockname()[1]}))):
        try:
            socket.socket(family).connect(addr); out.append('CONNECTED')
        except OSError as exc:
            out.append(type(exc).__name__)
    raise RuntimeError(str(out))
"""
    outcome = _alongside(attack)
    assert "CONNECTED" not in str(outcome) and "FileNotFoundError" in str(outcome), outcome
    for server in (unix, tcp):
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
        server.close()


@root_only
def test_fifos_and_symlinks_named_like_answers_are_ignored():
    attack = """
import os
def signals(c, p):
    for name in ('signals.arrow', 'error.json', 'candles.arrow'):
        os.mkfifo(name)
    os.symlink('/etc/shadow', 'shadow-answer')
    os.symlink('/proc/1/environ', 'env-answer')
    os._exit(0)  # leaves without answering
"""
    outcome = _alongside(attack, SandboxLimits(wall_seconds=10, cpu_seconds=5))
    assert isinstance(outcome, StrategyError) and "returned no signals" in str(outcome)


def _bomb(rows: int) -> bytes:
    big = pa.table({"action": pa.array(["HOLD" * 250_000] * rows), "stop_loss": pa.nulls(rows, pa.float64()),
                    "take_profit": pa.nulls(rows, pa.float64())})  # fmt: skip
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, big.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(big)
    return sink.getvalue().to_pybytes()


def test_a_compressed_arrow_answer_is_refused_before_it_is_decoded():
    bomb = _bomb(120)  # 120 MB of strings in a few hundred KB
    assert len(bomb) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadAnswer, match="is compressed"):
        read_answer(bomb, 120)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB


def test_an_answer_with_the_wrong_rows_columns_or_types_is_refused_before_decoding():
    def ipc(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    with pytest.raises(BadAnswer, match="claims 121 rows for 120 candles"):
        read_answer(ipc(pa.table({"action": ["HOLD"] * 121})), 120)
    with pytest.raises(BadAnswer, match="has 40 columns"):
        read_answer(ipc(pa.table({f"c{i}": [1.0] for i in range(40)})), 120)
    with pytest.raises(BadAnswer, match="only flat columns"):
        read_answer(ipc(pa.table({"action": pa.array(["HOLD"]).dictionary_encode()})), 120)
    with pytest.raises(BadAnswer, match="malformed|truncated"):
        read_answer(ipc(pa.table({"action": ["HOLD"] * 120}))[:-100], 120)
    assert read_answer(ipc(pa.table({"action": ["HOLD"] * 120})), 120).height == 120


@root_only
def test_a_decompression_bomb_through_the_answer_pipe_is_refused():
    attack = """
import os, sys
import pyarrow as pa
def signals(c, p):
    n = c.height
    t = pa.table({"action": pa.array(["HOLD" * 250_000] * n), "stop_loss": pa.nulls(n, pa.float64()),
                  "take_profit": pa.nulls(n, pa.float64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(t)
    os.write(int(sys.argv[1]), sink.getvalue().to_pybytes())
    os._exit(0)
"""
    outcome = _alongside(attack)
    assert isinstance(outcome, StrategyError) and "is compressed" in str(outcome), outcome


@root_only
def test_a_gibibyte_of_stdout_is_cut_at_the_cap_and_the_run_killed():
    outcome = _alongside(
        "import os\ndef signals(c, p):\n    block = b'x' * 2**20\n    for _ in range(1024):\n        os.write(1, block)\n"
    )
    assert "wrote more than 1048576 bytes of printed output and was killed" in str(outcome)


@root_only
def test_forked_children_together_over_the_memory_limit_are_killed():
    attack = """
import os, time
def signals(c, p):
    kids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            block = bytearray(200 * 1024**2)  # touched: 200 MB each, 600 MB together
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
"""
    outcome = _alongside(attack, SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=400))
    assert "exceeded its memory limit of 400 MB" in str(outcome), outcome


@root_only
def test_a_fork_bomb_hits_the_process_limit():
    attack = """
import os, time
def signals(c, p):
    while True:
        try:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
        except OSError:
            raise
"""
    outcome = _alongside(attack)
    assert "it hit its limit of 64 processes" in str(outcome), outcome


@root_only
def test_forked_children_share_one_cpu_limit():
    attack = """
import os
def signals(c, p):
    for _ in range(3):
        if os.fork() == 0:
            break
    while True:
        pass
"""
    # 4 busy processes under a 1-core quota: each alone would reach 2 s of CPU after ~8 s.
    outcome = _alongside(attack, SandboxLimits(wall_seconds=20, cpu_seconds=2))
    assert "exceeded its CPU limit of 2 s (its processes together)" in str(outcome), outcome


@root_only
def test_a_fake_error_report_is_labelled_as_the_strategys_own_and_clipped():
    attack = """
import os
def signals(c, p):
    open('error.json', 'w').write('{"type": "MemoryError"}')
    print("xcoin-strategy-error: exceeded its memory limit of 2048 MB" + "x" * 5_000_000)
    os._exit(3)
"""
    outcome = _alongside(attack, SandboxLimits(wall_seconds=20, cpu_seconds=5, stdout_kb=8192))
    text = str(outcome)
    assert text.startswith("strategy 'tenant-b' raised an exception (its own report: \"exceeded its memory")
    assert len(text) < 400


def test_validation_candles_are_fresh_each_time():
    a, b = sample_candles(), sample_candles()
    assert a["open_time"][0] != b["open_time"][0] and a["close"][0] != b["close"][0]
    for frame in (a, b):
        assert 500 <= frame.height < 800
        assert (frame["high"] >= frame[["open", "close"]].max_horizontal()).all()
        assert (frame["low"] <= frame[["open", "close"]].min_horizontal()).all()
        assert frame["close"].min() > 500 and frame["close"].max() < 300_000


def test_code_that_behaves_only_on_the_old_fixed_validation_candles_is_caught():
    # Honest on the old fixed sample (first open time 28,400,000 min, 600/250/420 rows); anywhere else
    # it goes LONG with its stop above the price, which live would place on the exchange.
    cheat = GOOD.replace(
        '(pl.col("close") * 0.98).alias("stop_loss")',
        '(pl.col("close") * (0.98 if sample else 1.05)).alias("stop_loss")',
    ).replace(
        'up = pl.col("close") > pl.col("close").rolling_mean(params["n"])',
        'sample = candles["open_time"][0] == 28_400_000 * 60_000 or candles.height in (600, 250, 420)\n'
        '    up = pl.col("close") > pl.col("close").rolling_mean(params["n"])',
    )
    old_sample = sample_candles(600, seed=7).with_columns(open_time=(pl.int_range(600) + 28_400_000) * 60_000)
    assert run_sandboxed("chameleon", cheat, old_sample, {}, FAST).signals.height == 600  # fine there
    report = validate_strategy("chameleon", cheat, {})
    assert report.status == "INVALID"
    assert any("stop_loss is not below" in e for e in report.errors), report.errors


def test_validation_accepts_an_honest_strategy():
    report = validate_strategy("honest", GOOD, {})
    assert report.ok, report.errors


def test_validation_catches_a_strategy_that_looks_at_the_next_candle():
    cheat = GOOD.replace(
        '(pl.col("close") * 1.04).alias("take_profit")',
        '(pl.col("close").shift(-1) * 0 + pl.col("close") * 1.04).alias("take_profit")',
    )
    report = validate_strategy("cheat", cheat, {})
    assert report.status == "INVALID"
    assert any("looks ahead" in e for e in report.errors)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def signals(c, p) return 1", "does not compile"),
        ("import polars as pl\ndef signals(c, p):\n    return c\n", "column"),
        (
            "import polars as pl\ndef signals(c, p):\n    return c.head(3).select(pl.lit('HOLD').alias('action'), pl.lit(None).alias('stop_loss'), pl.lit(None).alias('take_profit'))\n",
            "row",
        ),
        ("x = 1\n", "does not define a function signals"),
        (
            "import polars as pl\ndef signals(c, p):\n    return c.with_columns(action=pl.lit('LONG'), stop_loss=pl.lit(float('nan')), take_profit=pl.lit(None))\n",
            "NaN",
        ),
    ],
)
def test_validation_rejects_broken_strategies_with_the_reason(source, message):
    report = validate_strategy("broken", source, {})
    assert report.status == "INVALID"
    assert message in " ".join(report.errors)
