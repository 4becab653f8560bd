"""User strategy code runs locked down: bad behaviour becomes a clear error, never a hang or a leak."""

from __future__ import annotations

import pytest
from polars.testing import assert_frame_equal

from tests.fixtures.sandbox import (
    CANDLES,
    FAST,
    GOOD,
    expected_signals,
    root_only,
    run_fast,
)
from xcoin_trading.strategy.contract import StrategyError
from xcoin_trading.strategy.sandbox import SandboxLimits, run_sandboxed

# ---- the contract's hostile cases keep their clear errors -------------------------------------


def test_a_good_strategy_returns_its_signals_and_its_prints_are_only_reported():
    run = run_fast(GOOD)
    assert_frame_equal(run.signals, expected_signals(CANDLES), check_exact=False, rtol=1e-12)
    assert "debug output" in run.stdout


def test_a_strategy_that_raises_names_the_exception_and_line_as_its_own_report():
    with pytest.raises(
        StrategyError,
        match=r'raised an exception \(its own report: "ZeroDivisionError: division by zero at line 3"\)',
    ):
        run_fast("def signals(c, p):\n    x = 1\n    return x / 0\n")


def test_a_strategy_that_loops_forever_is_killed():
    with pytest.raises(StrategyError, match="CPU limit of 2 s"):
        run_fast(
            "def signals(c, p):\n    while True:\n        pass\n",
            SandboxLimits(wall_seconds=20, cpu_seconds=2),
        )


def test_a_strategy_that_sleeps_forever_is_killed_by_the_wall_clock():
    with pytest.raises(StrategyError, match=r"timed out after 2 s"):
        run_fast(
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
        run_fast(
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
        run_fast(probe)
    report = str(err.value)
    assert "caps={'0000000000000000'}" in report, report
    assert "uid=0 " not in report and "ALLOWED" not in report, report


def test_a_strategy_cannot_read_the_master_key_from_its_environment(monkeypatch):
    monkeypatch.setenv("XCOIN_ENCRYPTION_KEY", "c2VjcmV0LWtleS1tYXRlcmlhbA==")
    monkeypatch.setenv("COINDCX_API_SECRET", "exchange-secret")
    source = "import os\ndef signals(c, p):\n    return os.environ['XCOIN_ENCRYPTION_KEY']\n"
    with pytest.raises(StrategyError, match="KeyError: 'XCOIN_ENCRYPTION_KEY'") as err:
        run_fast(source)
    assert "c2VjcmV0" not in str(err.value)
    leak = "import os\ndef signals(c, p):\n    raise ValueError(sorted(k for k in os.environ if 'XCOIN' in k or 'COINDCX' in k))\n"
    with pytest.raises(StrategyError, match=r"ValueError: \[\]"):
        run_fast(leak)


@root_only
def test_as_root_the_strategy_has_no_network():
    # bwrap brings up a loopback of the run's own: nothing listens there, and the host is unreachable.
    with pytest.raises(StrategyError, match="Network is unreachable|Connection refused"):
        run_fast(
            "import socket\ndef signals(c, p):\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n"
        )


def test_a_strategy_returning_the_wrong_type_is_refused():
    with pytest.raises(StrategyError, match="must return a polars DataFrame, got dict"):
        run_fast("def signals(c, p):\n    return {'action': 'LONG'}\n")
