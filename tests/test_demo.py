"""`xcoin demo` runs on the embedded default with no environment and reports what exists and where."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_with_no_environment_and_is_rerunnable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XCOIN_", "COINDCX_"))}
    xcoin = Path(sys.executable).parent / "xcoin"
    first = subprocess.run(
        [str(xcoin), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert "3 users, 2 strategies, 3 broker_credentials, 6 subscriptions" in first.stdout
    assert (tmp_path / ".xcoin" / "xcoin.sqlite").exists()
    assert (tmp_path / ".xcoin" / "master.key").exists()
    assert "alice@demo.xcoin" in first.stdout and "****" in first.stdout
    # Live over a replayed window: every account's realised P&L equals its exchange ledger change.
    ledger_lines = [
        line.split() for line in first.stdout.splitlines() if " trades " in line and " ledger " in line
    ]
    assert len(ledger_lines) == 3
    for parts in ledger_lines:
        assert parts[parts.index("trades") + 1] == parts[parts.index("ledger") + 1], parts
    assert "COMPLETED" in first.stdout and "P&L summary for alice@demo.xcoin" in first.stdout
    second = subprocess.run(
        [str(xcoin), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert "3 users, 2 strategies, 3 broker_credentials, 6 subscriptions" in second.stdout
