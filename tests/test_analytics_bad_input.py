"""Bad SQL files, unknown tables and write statements fail with errors naming the culprit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from xcoin_trading.analytics.models import default_sql_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def sql_dir(tmp_path):
    target = tmp_path / "dbt_like_sql"
    shutil.copytree(default_sql_dir(), target)
    return target


def test_a_model_that_does_not_parse_fails_its_build_naming_file_line_and_column(sql_dir, sqlite_store):
    from xcoin_trading.analytics.models import SqlParseError, load_project
    from xcoin_trading.analytics.warehouse import build_model, build_models

    (sql_dir / "models" / "broken.sql").write_text(
        "SELECT user_id,\n       sum(pnl AS total\nFROM daily_pnl\n"
    )
    project = load_project(sql_dir)  # the other models still load and build
    assert project.models["broken"].parse_error
    with pytest.raises(SqlParseError) as err:
        build_model(sqlite_store, "broken", project)
    message = str(err.value)
    assert "dbt_like_sql/models/broken.sql" in message and "line 2" in message and "column" in message
    assert [b.name for b in build_models(sqlite_store, ["daily_pnl"], project)] == ["daily_pnl"]


def test_a_model_reading_an_unknown_table_fails_the_load_naming_the_model(sql_dir):
    from xcoin_trading.analytics.models import ModelError, load_project

    (sql_dir / "models" / "whale_report.sql").write_text("SELECT * FROM trades JOIN whales USING (user_id)")
    with pytest.raises(ModelError) as err:
        load_project(sql_dir)
    assert "whale_report" in str(err.value) and "'whales'" in str(err.value)


def test_a_model_with_two_statements_or_a_write_is_refused(sql_dir):
    from xcoin_trading.analytics.models import ModelError, load_project

    (sql_dir / "models" / "sneaky.sql").write_text("DELETE FROM trades")
    with pytest.raises(ModelError, match="sneaky .* must be exactly one SELECT, found DELETE"):
        load_project(sql_dir)


def test_models_in_a_cycle_are_refused(sql_dir):
    from xcoin_trading.analytics.models import ModelError, load_project

    (sql_dir / "models" / "a_model.sql").write_text("SELECT * FROM b_model")
    (sql_dir / "models" / "b_model.sql").write_text("SELECT * FROM a_model")
    with pytest.raises(ModelError, match="cycle"):
        load_project(sql_dir)


def test_dagster_definitions_validate_fails_with_the_models_name(sql_dir):
    (sql_dir / "models" / "whale_report.sql").write_text("SELECT * FROM whales")
    env = {**os.environ, "XCOIN_SQL_DIR": str(sql_dir)}
    dagster = str(Path(sys.executable).parent / "dagster")
    out = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "whale_report" in out.stdout + out.stderr and "whales" in out.stdout + out.stderr


def test_xcoin_sql_refuses_writes_unless_write_is_given(trade_book):
    from xcoin_trading.analytics import build_all
    from xcoin_trading.cli import main

    build_all(trade_book.settings)
    runner = CliRunner()
    for statement in ("DROP TABLE daily_pnl", "SELECT 1; DELETE FROM daily_pnl", "COPY trades TO 'x.csv'",
                      "ATTACH 'other.duckdb'", "EXPLAIN ANALYZE SELECT 1"):  # fmt: skip
        refused = runner.invoke(main, ["sql", statement])
        assert refused.exit_code == 2 and "not read-only" in refused.output and "--write" in refused.output, (
            statement
        )
    count = runner.invoke(main, ["sql", "SELECT count(*) AS n FROM daily_pnl", "--format", "json"])
    rows_before = json.loads(count.output)[0]["n"]
    assert rows_before > 0
    done = runner.invoke(main, ["sql", "--write", "DELETE FROM daily_pnl WHERE trades > 1"])
    assert done.exit_code == 0, done.output
    after = json.loads(
        runner.invoke(main, ["sql", "SELECT count(*) AS n FROM daily_pnl", "--format", "json"]).output
    )
    assert after[0]["n"] < rows_before


def test_a_read_only_connection_refuses_writes_even_past_the_classifier(trade_book):
    import duckdb

    from xcoin_trading.analytics import build_all
    from xcoin_trading.analytics.warehouse import connect

    build_all(trade_book.settings)
    with connect(trade_book.settings) as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("DROP TABLE daily_pnl")


def test_xcoin_sql_outputs_csv_json_parquet_and_reads_a_file(trade_book, tmp_path):
    import pyarrow.parquet as pq

    from xcoin_trading.analytics import build_all
    from xcoin_trading.cli import main

    build_all(trade_book.settings)
    runner = CliRunner()
    query = "SELECT strategy_code, sum(realized_pnl) AS pnl FROM strategy_performance GROUP BY 1 ORDER BY 1"
    expected = {}
    for t in trade_book.trades:
        if t["status"] == "CLOSED":
            code = next(c for c, i in trade_book.strategies.items() if i == t["strategy_id"])
            expected[code] = expected.get(code, 0) + t["pnl"]
    as_json = json.loads(runner.invoke(main, ["sql", query, "--format", "json"]).output)
    assert {r["strategy_code"]: r["pnl"] for r in as_json} == {k: str(v) for k, v in expected.items()} or {
        r["strategy_code"]: float(r["pnl"]) for r in as_json
    } == pytest.approx({k: float(v) for k, v in expected.items()})
    csv = runner.invoke(main, ["sql", query, "--format", "csv"]).output.splitlines()
    assert csv[0].replace('"', "") == "strategy_code,pnl" and len(csv) == 1 + len(expected)
    file = tmp_path / "q.sql"
    file.write_text(query)
    out = tmp_path / "out.parquet"
    assert (
        runner.invoke(main, ["sql", "--file", str(file), "--format", "parquet", "--out", str(out)]).exit_code
        == 0
    )
    assert pq.read_table(out).num_rows == len(expected)
    missing_out = runner.invoke(main, ["sql", query, "--format", "parquet"])
    assert missing_out.exit_code == 2 and "out is required" in missing_out.output


def test_xcoin_pnl_prints_the_summary_for_an_email(trade_book):
    from xcoin_trading.analytics import build_all
    from xcoin_trading.cli import main

    build_all(trade_book.settings)
    email = next(iter(trade_book.users))
    result = CliRunner().invoke(main, ["pnl", "--user", email, "--period", "all", "--price", "BTCUSDT=60000"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    closed = [
        t for t in trade_book.trades if t["user_id"] == trade_book.users[email] and t["status"] == "CLOSED"
    ]
    assert summary["totalTrades"] == len(closed)
    from decimal import Decimal

    assert Decimal(summary["totalRealizedPnl"]) == sum(t["pnl"] for t in closed)
    unknown = CliRunner().invoke(main, ["pnl", "--user", "nobody@x.test"])
    assert unknown.exit_code == 2 and "nobody@x.test not found" in unknown.output
    bad_price = CliRunner().invoke(main, ["pnl", "--user", email, "--price", "BTCUSDT=abc"])
    assert bad_price.exit_code == 2 and "price must look like SYMBOL=PRICE" in bad_price.output
