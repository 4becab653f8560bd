"""The Dagster code location as a sorted text snapshot: asset keys (group, partitions, upstream
assets), asset checks, jobs, schedules and sensors. A change to any of them shows up in review as a
diff of tests/snapshots/dagster_definitions.txt instead of slipping through."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "snapshots" / "dagster_definitions.txt"
UPDATE = "XCOIN_TEST_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -q tests/test_definitions_snapshot.py"


def definitions_snapshot() -> str:
    from xcoin_pipelines.definitions import defs

    d = defs()
    graph = d.resolve_asset_graph()
    lines = []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        kind = "asset" if node.is_materializable else "observable" if node.is_observable else "external"
        parts = type(node.partitions_def).__name__ if node.partitions_def else "-"
        deps = ", ".join(sorted(p.to_user_string() for p in node.parent_keys))
        lines.append(
            f"{kind} {key.to_user_string()}  group={node.group_name} partitions={parts} deps=[{deps}]"
        )
    lines += [f"check {c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys]
    lines += [f"job {j.name}" for j in d.resolve_all_job_defs() if not j.name.startswith("__")]
    lines += [f"schedule {s.name}  cron={s.cron_schedule} job={s.job_name}" for s in d.schedules or []]
    for sensor in d.sensors or []:
        s = d.resolve_sensor_def(sensor.name)
        jobs = ",".join(sorted(t.job_name for t in s.targets)) or "-"
        lines.append(f"sensor {s.name}  type={type(s).__name__} jobs={jobs}")
    return "\n".join(sorted(lines)) + "\n"


def test_dagster_definitions_match_the_committed_snapshot():
    current = definitions_snapshot()
    if os.environ.get("XCOIN_TEST_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(current)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(True), current.splitlines(True), str(SNAPSHOT), "current definitions"
        )
    )
    assert current == expected, (
        f"The Dagster definitions changed:\n{diff}\n"
        f"If the change is intended, update the snapshot and commit it with the change:\n  {UPDATE}"
    )
