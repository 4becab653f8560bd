"""Trade analytics: OLTP snapshots (Parquet) -> dbt_like_sql models (DuckDB) -> P&L summaries."""

from __future__ import annotations

from dataclasses import dataclass

from xcoin_trading.config import Settings


@dataclass(frozen=True)
class BuildSummary:
    snapshots: list  # list[SnapshotResult]
    models: list  # list[ModelBuild]
    tests: list  # list[DataTestResult]

    @property
    def failed_tests(self) -> list:
        return [t for t in self.tests if not t.passed]

    def describe(self) -> str:
        lines = ["snapshot             read  changed    total"]
        lines += [f"{s.table:<18} {s.read:>6} {s.changed:>8} {s.total:>8}" for s in self.snapshots]
        lines += ["model                        rows   seconds"]
        lines += [f"{m.name:<26} {m.rows:>6} {m.seconds:>9.3f}" for m in self.models]
        lines += ["data test                                      result"]
        lines += [f"{t.name:<46} {'ok' if t.passed else f'FAIL ({t.failing_rows} rows)'}" for t in self.tests]
        return "\n".join(lines)


def build_all(settings: Settings, *, full: bool = False) -> BuildSummary:
    """Snapshot every table, build every model, run every data test (the CLI's and demo's one call)."""
    from xcoin_trading.analytics.models import load_project
    from xcoin_trading.analytics.snapshot import snapshot_all
    from xcoin_trading.analytics.warehouse import build_models, run_data_tests

    project = load_project()
    snapshots = list(snapshot_all(settings, full=full).values())
    models = build_models(settings, project=project)
    tests = run_data_tests(settings, project)
    return BuildSummary(snapshots, models, tests)
