"""The Dagster code location loads: every asset, check, job, schedule and sensor resolves."""

from __future__ import annotations

import dagster as dg


def test_definitions_load_and_validate():
    from xcoin_pipelines.definitions import defs

    d = defs()
    dg.Definitions.validate_loadable(d)
    assert "xcoin" in d.resources


def test_domain_package_never_imports_dagster():
    import subprocess
    import sys

    code = "import sys, xcoin_trading.cli, xcoin_trading.demo; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
