"""Attack classes against the strategy sandbox, each next to an honest tenant whose answer must stay
exactly its own: uids, spares, processes, files, sockets, answers, memory, forks and CPU."""

from __future__ import annotations

import os
import re
import resource
import socket
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from tests.fixtures.sandbox import (
    FAST,
    GOOD,
    alongside,
    answer_offsets_past_the_data,
    root_only,
    run_cgroups,
    run_fast,
    sandbox_processes,
)
from xcoin_trading.strategy import sandbox, sandbox_host
from xcoin_trading.strategy.answer import BadAnswer, read_answer
from xcoin_trading.strategy.contract import StrategyError
from xcoin_trading.strategy.sandbox import SandboxLimits

# ---- attack classes of issue 13: each next to an honest tenant --------------------------------


@root_only
def test_a_runtime_that_overlaps_xcoin_home_is_refused_rather_than_shown(monkeypatch):
    from xcoin_trading.config import reset_settings
    from xcoin_trading.errors import ConfigError

    monkeypatch.setenv("XCOIN_HOME", os.path.join(sys.prefix, "xcoin-home"))
    reset_settings()
    try:
        with pytest.raises(ConfigError, match="overlaps XCOIN_HOME"):
            run_fast(GOOD)
    finally:
        monkeypatch.undo()
        reset_settings()


@root_only
def test_uids_are_never_shared_by_two_live_runs():
    who = "import os, time\ndef signals(c, p):\n    time.sleep(1)\n    raise RuntimeError(f'uid {os.getuid()} {os.getgid()}')\n"
    with ThreadPoolExecutor(6) as pool:
        errors = [f.exception() for f in [pool.submit(run_fast, who) for _ in range(6)]]
    ids = {str(e).split("uid ")[1].split('"')[0] for e in errors}
    assert len(ids) == 6
    assert all(int(i.split()[0]) in sandbox_host.uid_range() and i.split()[0] == i.split()[1] for i in ids)


@root_only
def test_a_spare_sandbox_serves_one_job_only_under_its_own_uid():
    who = "import os\ndef signals(c, p):\n    open('/tmp/mark', 'x').write('x')\n    raise RuntimeError(f'uid {os.getuid()}')\n"
    cgroups_before = run_cgroups()
    sandbox.prewarm(FAST, 2)
    assert len(sandbox._spares[FAST]) == 2
    errors = [
        pytest.raises(StrategyError, run_fast, who).value for _ in range(3)
    ]  # 2 spares, then a cold one
    assert len({str(e).split("uid ")[1] for e in errors}) == 3  # /tmp/mark never existed already either
    assert sandbox._spares[FAST] == []
    sandbox.prewarm(FAST, 1)
    sandbox.discard_spares()
    assert sandbox_processes() == []
    assert run_cgroups() <= cgroups_before


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
    outcome = alongside(look)
    # B sees only its own pid namespace (bwrap's init, the inner bwrap, itself) and can write nowhere
    # outside its own tmpfs; A (running meanwhile) is neither visible nor touched.
    assert re.search(r"pids \[1, 2(, 3)?\] writable \[\]", str(outcome)), outcome
    kill_all = "import os, signal\ndef signals(c, p):\n    os.kill(-1, signal.SIGKILL)\n"
    outcome = alongside(kill_all)  # every process B may signal: its own run only
    assert "was killed by signal SIGKILL" in str(outcome), outcome


@root_only
def test_a_background_or_double_forked_process_is_gone_when_the_run_ends():
    attack = GOOD.replace(
        "def signals(candles, params):",
        "import os, time\ndef signals(candles, params):\n"
        "    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        "            while True:\n                time.sleep(0.1)\n        os._exit(0)\n",
    )
    outcome = alongside(attack)
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
    outcome = alongside(attack)
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
    outcome = alongside(attack)
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
    outcome = alongside(attack, SandboxLimits(wall_seconds=10, cpu_seconds=5))
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
    outcome = alongside(attack)
    assert isinstance(outcome, StrategyError) and "is compressed" in str(outcome), outcome


@root_only
@pytest.mark.parametrize("reach", [4096, 2_000_000_000], ids=["read-memory", "crash"])
def test_string_offsets_past_the_answer_are_refused_and_the_worker_lives(reach):
    outcome = alongside(answer_offsets_past_the_data(reach))
    assert isinstance(outcome, StrategyError) and "unreadable" in str(outcome), outcome


def test_a_number_column_shorter_than_its_rows_is_refused():
    n = 120
    table = pa.table({"action": ["HOLD"] * n, "stop_loss": [1.5] * n, "take_profit": [2.5] * n})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = bytearray(sink.getvalue().to_pybytes())
    size_at = data.find(struct.pack("<q", 8 * n))  # stop_loss's (offset, size) in the batch header
    struct.pack_into("<q", data, size_at, 8)  # one float's worth of bytes for 120 rows
    with pytest.raises(BadAnswer, match="unreadable"):
        read_answer(bytes(data), n)


def test_a_huge_unknown_action_is_named_in_a_short_error():
    import polars as pl

    from xcoin_trading.strategy.contract import validate_signals
    from xcoin_trading.strategy.validation import sample_candles

    candles = sample_candles(120, seed=7)
    answer = candles.select(
        pl.repeat("Z" * 100_000, candles.height).alias("action"),
        pl.repeat(None, candles.height, dtype=pl.Float64).alias("stop_loss"),
        pl.repeat(None, candles.height, dtype=pl.Float64).alias("take_profit"),
    )
    with pytest.raises(StrategyError, match="returned action 'ZZZ") as refused:
        validate_signals(answer, candles, "tenant-b")
    assert len(str(refused.value)) < 300


@root_only
def test_a_gibibyte_of_stdout_is_cut_at_the_cap_and_the_run_killed():
    outcome = alongside(
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
    outcome = alongside(attack, SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=400))
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
    outcome = alongside(attack)
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
    outcome = alongside(attack, SandboxLimits(wall_seconds=20, cpu_seconds=2))
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
    outcome = alongside(attack, SandboxLimits(wall_seconds=20, cpu_seconds=5, stdout_kb=8192))
    text = str(outcome)
    assert text.startswith("strategy 'tenant-b' raised an exception (its own report: \"exceeded its memory")
    assert len(text) < 400
