"""Trade analytics in Dagster: snapshots of the store (group `snapshots`) -> one asset per
dbt_like_sql model (group `analytics`, deps from sqlglot) -> one asset check per data test.

The project is loaded when the code location loads, so a model reading an unknown table fails
`dagster definitions validate` with the model's name; a file that does not parse becomes an asset
that fails when materialised, naming the file and position. Model builds share the `duckdb_warehouse`
pool and, whatever the pool limit, a cross-process lock on the warehouse file (one DuckDB writer).
"""

from datetime import UTC, datetime

import dagster as dg

from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.analytics.models import ModelError, Project, load_project
from xcoin_trading.analytics.snapshot import SNAPSHOT_TABLES

WAREHOUSE_POOL = "duckdb_warehouse"


def snapshot_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["snapshots", table])


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["analytics", name])


def _key(project: Project, table: str) -> dg.AssetKey:
    return model_key(table) if table in project.models else snapshot_key(table)


def _sql_md(sql: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"```sql\n{sql.strip()}\n```")


def _run_instant(context: dg.AssetExecutionContext) -> datetime:
    """The run's creation time: every snapshot of one run copies the store as of the same instant."""
    record = context.instance.get_run_record_by_id(context.run_id)
    created = record.create_timestamp if record else datetime.now(UTC)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


# Store tables a Dagster asset writes: the snapshot copies what that asset produced (lineage only).
SNAPSHOT_UPSTREAM: dict[str, list[dg.AssetKey]] = {
    "backtest_results": [dg.AssetKey(["backtests", "backtest_result"])],
}


def build_snapshot_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=snapshot_key(table),
        deps=SNAPSHOT_UPSTREAM.get(table, []),
        group_name="snapshots",
        kinds={"parquet"},
        description=f"`{table}` copied from the store into lake/snapshots/{table}.parquet, incrementally by "
        "updated_at (upsert by id); secret columns and broker credentials are never copied.",
    )
    def snapshot(context: dg.AssetExecutionContext, xcoin: XcoinSettingsResource) -> dg.MaterializeResult:
        from xcoin_trading.analytics.snapshot import snapshot_table

        result = snapshot_table(xcoin.get(), table, until=_run_instant(context))
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.total,
                "read": result.read,
                "inserted": result.inserted,
                "updated": result.updated,
                "full_copy": result.full,
                "watermark": result.watermark.isoformat() if result.watermark else "",
                "path": dg.MetadataValue.path(str(result.path)),
            }
        )

    return snapshot


def build_model_asset(project: Project, name: str) -> dg.AssetsDefinition:
    model = project.models[name]

    @dg.asset(
        key=model_key(name),
        deps=[_key(project, ref) for ref in sorted(model.refs)],
        group_name="analytics",
        kinds={"duckdb", "sql"},
        code_version=model.code_version,
        pool=WAREHOUSE_POOL,
        description=" ".join(
            line.strip("- ").strip() for line in model.sql.splitlines() if line.startswith("--")
        )
        or f"dbt_like_sql model {name}",
        metadata={"sql": _sql_md(model.sql), "file": dg.MetadataValue.path(str(model.path))},
    )
    def sql_model(context: dg.AssetExecutionContext, xcoin: XcoinSettingsResource) -> dg.MaterializeResult:
        from xcoin_trading.analytics.warehouse import build_model

        try:
            build = build_model(xcoin.get(), name, project)
        except ModelError as exc:
            raise dg.Failure(description=str(exc)) from None
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": build.rows,
                "seconds": round(build.seconds, 3),
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(column, kind) for column, kind in build.columns]
                ),
            }
        )

    return sql_model


def build_data_test_check(project: Project, name: str) -> dg.AssetChecksDefinition:
    test = project.tests[name]
    target = project.test_target(name)

    @dg.asset_check(
        asset=_key(project, target),
        name=name,
        additional_deps=[_key(project, ref) for ref in sorted(test.refs - {target})],
        description=" ".join(
            line.strip("- ").strip() for line in test.sql.splitlines() if line.startswith("--")
        )
        or f"dbt_like_sql data test {name}: must return no rows",
        metadata={"sql": _sql_md(test.sql)},
    )
    def data_test(xcoin: XcoinSettingsResource) -> dg.AssetCheckResult:
        from xcoin_trading.analytics.queries import jsonable
        from xcoin_trading.analytics.warehouse import run_data_test

        try:
            result = run_data_test(xcoin.get(), name, project)
        except ModelError as exc:
            raise dg.Failure(description=str(exc)) from None
        return dg.AssetCheckResult(
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if result.passed else f"{result.failing_rows} rows break: {result.description}",
            metadata={
                "failing_rows": result.failing_rows,
                "sample": dg.MetadataValue.json(jsonable(result.sample)),
            },
        )

    return data_test


PROJECT = load_project()  # raises ModelError naming the model: the code location does not load
SNAPSHOT_ASSETS = [build_snapshot_asset(table) for table in SNAPSHOT_TABLES]
MODEL_ASSETS = [build_model_asset(PROJECT, name) for name in PROJECT.order]
DATA_TEST_CHECKS = [build_data_test_check(PROJECT, name) for name in PROJECT.tests]

analytics_job = dg.define_asset_job(
    "analytics_job",
    selection=dg.AssetSelection.groups("snapshots", "analytics"),
    executor_def=dg.in_process_executor,
    description="Snapshot the store, rebuild every model, run the data tests.",
)

analytics_refresh_schedule = dg.ScheduleDefinition(
    name="analytics_refresh_schedule",
    job=analytics_job,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    description="Keeps P&L and positions summaries at most ~10 minutes behind the store.",
)
