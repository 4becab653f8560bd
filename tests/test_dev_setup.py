"""`make dev` / `make demo` set up the Dagster instance the cockpit needs, under the given XCOIN_HOME."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "xcoin_pipelines" / "defs" / "live" / "dagster.example.yaml"


def _make(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-s", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_make_writes_the_instance_yaml_once_under_xcoin_home(tmp_path):
    home = tmp_path / "elsewhere"
    target = home / "dagster" / "dagster.yaml"
    _make(str(target), f"XCOIN_HOME={home}")
    assert target.read_text() == EXAMPLE.read_text()
    assert "dequeue_interval_seconds: 1" in target.read_text() and "xcoin/live_lane" in target.read_text()
    target.write_text(target.read_text() + "# operator edit\n")
    _make(str(target), f"XCOIN_HOME={home}")
    assert target.read_text().endswith("# operator edit\n")  # never overwritten


@pytest.mark.parametrize("goal", ["dev", "demo"])
def test_make_dev_and_demo_use_xcoin_home_and_write_the_yaml_first(tmp_path, goal):
    home = tmp_path / "h"
    plan = _make("-n", goal, f"XCOIN_HOME={home}")
    assert f"cp xcoin_pipelines/defs/live/dagster.example.yaml {home}/dagster/dagster.yaml" in plan
    assert f"XCOIN_HOME={home} " in plan
    if goal == "dev":
        assert f"DAGSTER_HOME={home}/dagster " in plan and "dagster dev -w workspace.yaml" in plan
