"""User strategy code runs locked down: bad behaviour becomes a clear error, never a hang or a leak."""

from __future__ import annotations

import os

import pytest

from xcoin_trading.strategy.contract import StrategyError
from xcoin_trading.strategy.sandbox import SandboxLimits, isolation_available, run_sandboxed
from xcoin_trading.strategy.validation import sample_candles, validate_strategy

FAST = SandboxLimits(wall_seconds=10, cpu_seconds=3)

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


def _run(source: str, limits: SandboxLimits = FAST):
    return run_sandboxed("user-strat", source, sample_candles(120), {}, limits)


def test_a_good_strategy_returns_its_signals_and_its_prints_are_only_reported():
    run = _run(GOOD)
    assert run.signals.columns == ["action", "stop_loss", "take_profit"]
    assert run.signals.height == 120
    assert "debug output" in run.stdout


def test_a_strategy_that_raises_names_the_exception_and_line():
    with pytest.raises(StrategyError, match=r"raised ZeroDivisionError: division by zero at line 3"):
        _run("def signals(c, p):\n    x = 1\n    return x / 0\n")


def test_a_strategy_that_loops_forever_is_killed():
    with pytest.raises(StrategyError, match="CPU limit|timed out"):
        _run("def signals(c, p):\n    while True:\n        pass\n")


def test_a_strategy_that_sleeps_forever_is_killed_by_the_wall_clock():
    with pytest.raises(StrategyError, match=r"timed out after 2 s"):
        _run(
            "import time\ndef signals(c, p):\n    time.sleep(60)\n",
            SandboxLimits(wall_seconds=2, cpu_seconds=3),
        )


def test_a_strategy_that_allocates_4gb_hits_its_memory_limit():
    with pytest.raises(StrategyError, match="memory limit"):
        _run("def signals(c, p):\n    block = bytearray(4 * 1024**3)\n    return block\n")


@pytest.mark.skipif(
    os.geteuid() == 0 and not isolation_available(),
    reason="a root child without the user switch may lift limits",
)
def test_a_strategy_cannot_lift_its_own_limits():
    lift = (
        "import resource\ndef signals(c, p):\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
    )
    with pytest.raises(
        StrategyError, match=r"raised ValueError: not allowed to raise maximum limit at line 3"
    ):
        _run(lift)


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


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespace and user switch need root")
def test_as_root_the_strategy_has_no_network_and_cannot_read_private_files(tmp_path):
    assert isolation_available()
    with pytest.raises(StrategyError, match="Network is unreachable"):
        _run(
            "import socket\ndef signals(c, p):\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n"
        )
    secret = tmp_path / "master.key"
    secret.write_text("top-secret")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    with pytest.raises(StrategyError, match="PermissionError"):
        _run(f"def signals(c, p):\n    return open({str(secret)!r}).read()\n")


def test_a_strategy_returning_the_wrong_type_is_refused():
    with pytest.raises(StrategyError, match="must return a polars DataFrame, got dict"):
        _run("def signals(c, p):\n    return {'action': 'LONG'}\n")


def test_validation_accepts_an_honest_strategy():
    report = validate_strategy("honest", GOOD, {})
    assert report.ok, report.errors


def test_validation_catches_a_strategy_that_looks_at_the_next_candle():
    cheat = GOOD.replace(
        'pl.col("close") > pl.col("close").rolling_mean(params["n"])',
        'pl.col("close").shift(-1) > pl.col("close")',
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
    ],
)
def test_validation_rejects_broken_strategies_with_the_reason(source, message):
    report = validate_strategy("broken", source, {})
    assert report.status == "INVALID"
    assert message in " ".join(report.errors)
