"""`xcoin backtest run | sweep | history` as a user types them; bad input writes no result."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from tests.conftest import market_options, shared_data_file
from xcoin_trading.backtest.metrics import SEED_FIELDS
from xcoin_trading.backtest.results import list_results
from xcoin_trading.cli import main
from xcoin_trading.config import get_settings


@pytest.fixture(scope="module")
def btc_file() -> str:
    return str(shared_data_file("BTCUSDT-1m-2024-01.parquet"))


def xcoin(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def sma(command: str, *options: str) -> tuple[int, str]:
    """`xcoin backtest <command>` of the built-in SMA crossover, the strategy most of these tests run."""
    return xcoin("backtest", command, "--strategy", "sma_crossover", *options)


def _artifact_dirs() -> list:
    root = get_settings().artifacts_dir / "backtests"
    return list(root.iterdir()) if root.exists() else []


def test_run_prints_the_seed_metrics_writes_json_and_report_and_is_in_history(tmp_path, btc_file):
    out, report = tmp_path / "bt.json", tmp_path / "bt.html"
    code, text = sma(
        "run",
        "--data",
        btc_file,
        "--params",
        "fast=10,slow=40",
        "--capital",
        "5000",
        "--commission",
        "0.0005",
        "--json",
        str(out),
        "--report",
        str(report),
    )
    assert code == 0, text
    for name in SEED_FIELDS:
        assert name in text
    payload = json.loads(out.read_text())
    assert set(SEED_FIELDS) <= set(payload["metrics"])
    assert len(payload["trades"]) == payload["metrics"]["totalTrades"] > 0
    assert payload["params"]["fast"] == 10 and payload["config"]["initial_capital"] == "5000"
    first = payload["trades"][0]
    assert {
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
        "side",
        "quantity",
        "pnl",
        "exit_reason",
        "ambiguous",
    } <= set(first)
    assert report.exists() and report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list_results("sma_crossover")
    assert len(rows) == 1 and rows[0]["metrics"]["netPnl"] == pytest.approx(payload["metrics"]["netPnl"])
    artifacts = rows[0]["artifacts"]
    trades = pl.read_parquet(artifacts["trades"])
    assert trades.height == payload["metrics"]["totalTrades"]
    assert pl.read_parquet(artifacts["equity"]).height == 44_640
    assert f"stored as backtest #{rows[0]['id']}" in text

    code, text = xcoin("backtest", "history", "--strategy", "sma_crossover")
    assert (
        code == 0 and "sma_crossover" in text and "BTCUSDT-1m-2024-01" in text and artifacts["report"] in text
    )
    code, text = xcoin("backtest", "history", "--strategy", "atr_trend")
    assert code == 0 and "no backtests stored for atr_trend" in text


def test_a_user_strategy_file_and_a_stored_strategy_code_both_run(tmp_path, btc_file):
    from xcoin_trading.services.strategies import create_strategy
    from xcoin_trading.services.users import register_user
    from xcoin_trading.store.db import init_db, session_scope

    path = tmp_path / "every_hour.py"
    path.write_text(
        "import polars as pl\n"
        "def signals(candles, params):\n"
        "    i = pl.int_range(pl.len())\n"
        "    a = pl.when(i % 60 == 0).then(pl.lit('LONG')).when(i % 60 == 30).then(pl.lit('EXIT')).otherwise(pl.lit('HOLD'))\n"
        "    return candles.select(a.alias('action'), pl.lit(None, dtype=pl.Float64).alias('stop_loss'),\n"
        "                          pl.lit(None, dtype=pl.Float64).alias('take_profit'))\n"
    )
    code, text = xcoin("backtest", "run", "--strategy", str(path), "--data", btc_file, "--no-save")
    assert code == 0, text
    assert "totalTrades            744" in text  # 44,640 minutes / 60, each closed 30 minutes later
    assert list_results() == []  # --no-save

    settings = get_settings()
    init_db(settings)
    with session_scope(settings) as session:
        user = register_user(session, "quant@example.com", "correct horse battery")
        create_strategy(
            session,
            user.id,
            name="Fast SMA",
            code="fast-sma",
            symbol="BTCUSDT",
            resolution="1m",
            builtin="sma_crossover",
            params={"fast": 5, "slow": 30},
        )
    code, text = xcoin("backtest", "run", "--strategy", "fast-sma", "--data", btc_file)
    assert code == 0, text
    assert '"fast": 5' in text and '"slow": 30' in text
    [row] = list_results("fast-sma")
    assert row["config"]["params"]["fast"] == 5


def test_lake_candles_are_read_through_the_market_data_api(lake_btc):
    def lake_run(start: str, end: str) -> tuple[int, str]:
        return sma("run", *market_options("BTCUSDT", "1m", start, end))

    code, text = lake_run("2024-01-02", "2024-01-04")
    assert code == 0, text
    assert "4,320 candles (1m)" in text  # 3 whole days, --end day included
    [row] = list_results()
    assert row["config"]["symbol"] == "BTCUSDT"
    # Quantities follow the BTCUSDT market step (0.00001).
    q = pl.read_parquet(row["artifacts"]["trades"]).get_column("quantity")
    assert ((q * 100_000).round(6) % 1 == 0).all()

    code, text = lake_run("2024-01-03", "2024-01-07")
    assert code == 2 and "error:" in text and "2024-01-05" in text  # names the missing days
    assert len(list_results()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--capital", "-100"], "initial_capital must be > 0, got -100"),
        (["--commission", "-0.001"], "commission must be in [0, 0.1)"),
        (["--leverage", "0"], "leverage must be in [1, 125], got 0"),
        (["--risk", "2"], "risk_per_trade must be in (0, 1], got 2"),
        (["--params", "fast=60,slow=20"], "params.fast must be below slow"),
        (["--params", "speed=3"], "unknown parameter(s) ['speed']"),
        (["--start", "2024-01-20", "--end", "2024-01-10"], "start must be before end"),
        (["--start", "2025-03-01", "--end", "2025-03-02"], "has no candles between"),
        (["--start", "yesterday"], "start must be YYYY-MM-DD or an ISO datetime"),
        (["--intrabar", "1m"], "'1m' needs the 1-minute candles"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error_and_no_result(btc_file, args, message):
    base = {"--strategy": "sma_crossover", "--data": btc_file}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    code, text = xcoin("backtest", "run", *[x for kv in base.items() for x in kv])
    assert code == 2
    assert message in text
    assert "Traceback" not in text
    assert list_results() == [] and _artifact_dirs() == []


def test_a_failing_strategy_is_reported_and_nothing_is_stored(tmp_path, btc_file):
    path = tmp_path / "boom.py"
    path.write_text("def signals(candles, params):\n    return 1 / 0\n")
    code, text = xcoin("backtest", "run", "--strategy", str(path), "--data", btc_file)
    assert (
        code == 2
        and "strategy 'boom' raised an exception (its own report: \"ZeroDivisionError: division by zero"
        in text
    )
    assert list_results() == [] and _artifact_dirs() == []


def test_without_data_or_a_full_lake_range_the_missing_option_is_named():
    code, text = sma("run", "--symbol", "BTCUSDT")
    assert code == 2 and "resolution is required unless a data file is given" in text


def test_sweep_ranks_every_combination_by_the_chosen_metric(tmp_path, btc_file):
    out = tmp_path / "ranking.parquet"
    code, text = sma(
        "sweep",
        "--data",
        btc_file,
        "--grid",
        "fast=5:20:5;slow=50,100;sl_pct=0.01,0.02",
        "--metric",
        "netPnl",
        "--out",
        str(out),
    )
    assert code == 0, text
    ranking = pl.read_parquet(out)
    assert ranking.height == 16 and ranking.get_column("error").null_count() == 16
    pnl = ranking.get_column("netPnl").to_list()
    assert pnl == sorted(pnl, reverse=True)
    assert "rank=1  fast=" in text and "16 backtests" in text  # progress bar, then the ranking
    # The winner re-run as a single backtest gives the same figure.
    best = ranking.row(0, named=True)
    code, text = sma(
        "run",
        "--data",
        btc_file,
        "--no-save",
        "--json",
        str(tmp_path / "best.json"),
        "--params",
        f"fast={best['param_fast']},slow={best['param_slow']},sl_pct={best['param_sl_pct']}",
    )
    assert json.loads((tmp_path / "best.json").read_text())["metrics"]["netPnl"] == pytest.approx(
        best["netPnl"]
    )

    code, text = sma("sweep", "--data", btc_file, "--grid", "fast=5;slow=4")
    assert code == 2 and "must be below slow" in text  # no valid combination: bad input, reason kept
    code, text = sma("sweep", "--data", btc_file, "--grid", "fast")
    assert code == 2 and "grid each entry must look like name=v1,v2" in text


def test_sweeps_and_walk_forwards_are_stored_shown_and_compared(tmp_path, btc_file):
    code, text = sma("sweep", "--data", btc_file, "--grid",
                       "fast=5,10,20;slow=30,60,120", "--params", "sl_pct=0.01,tp_pct=0.02", "--oos", "0.3",
                       "--metric", "netPnl")  # fmt: skip
    assert code == 0, text
    [sweep] = list_results()
    assert sweep["config"]["kind"] == "sweep" and sweep["config"]["oos_fraction"] == 0.3
    ranking = pl.read_parquet(sweep["artifacts"]["ranking"])
    assert ranking.height == 9 and "oos_netPnl" in ranking.columns
    best = ranking.row(0, named=True)
    assert sweep["metrics"]["netPnl"] == pytest.approx(best["netPnl"])
    on_edge = best["param_fast"] in ("5", "20") or best["param_slow"] in ("30", "120")
    assert ("warning: best " in text) == on_edge

    code, text = xcoin("backtest", "show", str(sweep["id"]))
    assert code == 0, text
    assert f"#{sweep['id']} sweep sma_crossover" in text and "last 30% held out" in text
    assert f"rank=1  fast={best['param_fast']}  slow={best['param_slow']}" in text and "oos_netPnl=" in text

    report = tmp_path / "wf.html"
    code, text = sma("walk-forward", "--data", btc_file, "--grid",
                       "fast=5,10;slow=30,60", "--windows", "4", "--train-ratio", "2", "--report", str(report))  # fmt: skip
    assert code == 0, text
    assert "stitched out of sample: net P&L" in text and report.exists()
    wf = list_results()[0]
    assert wf["config"]["kind"] == "walk_forward" and pl.read_parquet(wf["artifacts"]["windows"]).height == 4
    code, text = xcoin("backtest", "show", str(wf["id"]))
    assert code == 0 and text.count("window ") == 4 and "report " in text

    for params in ("fast=10,slow=40", "fast=20,slow=80"):
        code, text = sma("run", "--data", btc_file, "--params", params)
        assert code == 0, text
    second, first = list_results()[:2]
    code, text = xcoin("backtest", "compare", str(first["id"]), str(second["id"]))
    assert code == 0, text
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert lines["params.fast"] == ["10", "20"] and lines["params.slow"] == ["40", "80"]
    assert lines["netPnl"] == [f"{first['metrics']['netPnl']:,.4f}", f"{second['metrics']['netPnl']:,.4f}"]
    code, text = xcoin("backtest", "history")
    assert code == 0 and "walk_forward" in text and "sweep" in text

    code, text = xcoin("backtest", "show", "999999")
    assert code != 0 and "no stored backtest has id 999999" in text


LOOKS_AHEAD = """
import polars as pl
def signals(candles, params):
    up = pl.col("close").shift(-1) > pl.col("close")
    return candles.select(
        pl.when(up).then(pl.lit("LONG")).otherwise(pl.lit("EXIT")).alias("action"),
        (pl.col("close") * 0.99).alias("stop_loss"),
        (pl.col("close") * 1.01).alias("take_profit"),
    )
"""


def test_a_strategy_file_that_looks_ahead_is_refused_unless_allowed(tmp_path, btc_file):
    cheat = tmp_path / "cheat.py"
    cheat.write_text(LOOKS_AHEAD)
    args = (
        "backtest",
        "run",
        "--strategy",
        str(cheat),
        "--data",
        btc_file,
        "--end",
        "2024-01-03",
        "--no-save",
    )
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2
    assert "error: strategy looks ahead: with " in result.output
    assert f"({cheat} fails validation; pass --allow-invalid to run it anyway)" in result.output
    assert "--allow-invalid" in result.output and "totalTrades" not in result.output
    allowed = CliRunner().invoke(main, [*args, "--allow-invalid"])
    assert allowed.exit_code == 0, allowed.output
    assert (
        "warning: " in allowed.stderr
        and "not trustworthy" in allowed.stderr
        and "totalTrades" in allowed.stdout
    )
    honest = tmp_path / "honest.py"
    honest.write_text(LOOKS_AHEAD.replace('shift(-1) > pl.col("close")', 'shift(1) < pl.col("close")'))
    ok = CliRunner().invoke(main, ["backtest", "run", "--strategy", str(honest), "--data", btc_file,
                                   "--end", "2024-01-03", "--no-save"])  # fmt: skip
    assert ok.exit_code == 0 and "warning" not in ok.output, ok.output


def test_metric_names_say_gross_or_net_and_every_metric_has_a_unit(tmp_path, btc_file):
    out = tmp_path / "m.json"
    code, text = sma("run", "--data", btc_file, "--end", "2024-01-10",
                       "--no-save", "--json", str(out))  # fmt: skip
    assert code == 0, text
    payload = json.loads(out.read_text())
    m, units, trades = payload["metrics"], payload["units"], payload["trades"]
    assert set(m) == set(units)
    fees = sum(t["entry_fee"] + t["exit_fee"] for t in trades)
    net = sum(t["pnl"] for t in trades)
    assert m["grossPnl"] == m["totalPnl"] == pytest.approx(net + fees)  # the seed's totalPnl is gross
    assert m["netPnlPct"] == m["totalPnlPct"] == pytest.approx(net / 10_000 * 100)  # ... its Pct is net
    assert m["spanDays"] == pytest.approx(10.0) and "extrapolates 10.0 days" in text  # Jan 1-10
    assert "averageTradeDuration" in text and units["averageTradeDuration"] == "seconds"
