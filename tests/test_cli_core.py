"""The `xcoin` command: every subcommand has help, and the account flow works from a shell."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from xcoin_trading.cli import main


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["db", "upgrade"],
        ["users", "create"],
        ["broker", "add"],
        ["strategies", "add"],
        ["subscribe"],
        ["vault", "rotate"],
    ],
)
def test_every_command_explains_itself(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: main " + " ".join(command) in result.output or "Usage:" in result.output
    assert "--help" in result.output


def test_account_flow_from_the_command_line(tmp_path, master_key_env):
    assert _run("db", "upgrade").exit_code == 0
    assert _run("users", "create", "--email", "q@x.io", "--password", "long-password").exit_code == 0
    out = _run(
        "broker", "add", "--user", "q@x.io", "--api-key", "KEY-1234567890", "--api-secret", "SECRET-abc"
    )
    assert out.exit_code == 0 and "****7890" in out.output and "SECRET-abc" not in out.output
    strategy_file = tmp_path / "mine.py"
    strategy_file.write_text(
        "import polars as pl\n\ndef signals(candles, params):\n"
        "    return candles.with_columns(pl.lit('HOLD').alias('action'), pl.lit(None, pl.Float64).alias('stop_loss'),"
        " pl.lit(None, pl.Float64).alias('take_profit'))\n"
    )
    out = _run("strategies", "add", str(strategy_file), "--user", "q@x.io", "--code", "q-strat",
               "--symbol", "ETHUSDT", "--resolution", "5m", "--params", '{"n": 3}')  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "added: VALID" in out.output
    out = _run("subscribe", "--user", "q@x.io", "--strategy", "q-strat", "--capital", "500", "--risk", "0.02")
    assert out.exit_code == 0 and "capital=500" in out.output
    # code that looks at the next candle is stored INVALID, with the reason, and cannot be subscribed to
    cheat = tmp_path / "cheat.py"
    cheat.write_text(
        strategy_file.read_text().replace(
            "pl.lit('HOLD')",
            "pl.when(pl.col('close').shift(-1) > pl.col('close')).then(pl.lit('LONG')).otherwise(pl.lit('HOLD'))",
        )
    )
    out = _run(
        "strategies",
        "add",
        str(cheat),
        "--user",
        "q@x.io",
        "--code",
        "q-cheat",
        "--symbol",
        "ETHUSDT",
        "--resolution",
        "5m",
    )
    assert out.exit_code == 2 and "added: INVALID" in out.output and "looks ahead" in out.output
    out = _run("subscribe", "--user", "q@x.io", "--strategy", "q-cheat", "--capital", "500", "--risk", "0.02")
    assert out.exit_code == 2 and "failed validation" in out.output


def test_bad_input_is_one_clear_line_and_exit_code_2(master_key_env):
    assert _run("db", "upgrade").exit_code == 0
    _run("users", "create", "--email", "q@x.io", "--password", "long-password")
    _run("broker", "add", "--user", "q@x.io", "--api-key", "KEY-1234567890", "--api-secret", "S")
    _run(
        "strategies",
        "add",
        "--builtin",
        "sma_crossover",
        "--user",
        "q@x.io",
        "--code",
        "s1",
        "--symbol",
        "BTCUSDT",
        "--resolution",
        "1m",
    )
    out = _run("subscribe", "--user", "q@x.io", "--strategy", "s1", "--capital", "-10", "--risk", "0.01")
    assert out.exit_code == 2
    assert out.output.strip() == "error: capital must be greater than 0, got -10"
    out = _run(
        "strategies",
        "add",
        "--builtin",
        "x",
        "--user",
        "q@x.io",
        "--code",
        "s2",
        "--symbol",
        "NOPE",
        "--resolution",
        "1m",
    )
    assert out.exit_code == 2 and "symbol is not a known market" in out.output
    out = _run("subscribe", "--user", "ghost@x.io", "--strategy", "s1", "--capital", "1", "--risk", "0.01")
    assert out.exit_code == 2 and "user ghost@x.io not found" in out.output
