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


def test_loading_the_code_location_starts_no_thread_and_imports_no_numeric_library():
    """A warm run process forks after loading the code location (xcoin_pipelines/launcher.py):
    numpy, polars, pyarrow and numba start threads at import, which a forked child would miss."""
    import json
    import subprocess
    import sys

    code = (
        "import json, os, sys; import xcoin_pipelines.definitions as d; d.defs(); "
        "heavy = ['numpy', 'polars', 'pyarrow', 'numba', 'matplotlib', 'vectorbt', 'fastapi']; "
        "print(json.dumps([len(os.listdir('/proc/self/task')), [m for m in heavy if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [1, []]


def test_launchpad_defaults_read_from_source_are_the_builtins_own():
    import importlib

    from xcoin_pipelines.defs.backtest import config
    from xcoin_trading.strategy.builtin import BUILTIN_STRATEGIES
    from xcoin_trading.strategy.builtin._common import MODES

    assert config.BUILTIN_STRATEGIES == BUILTIN_STRATEGIES
    assert config.MODES == MODES
    for name in BUILTIN_STRATEGIES:
        module = importlib.import_module(f"xcoin_trading.strategy.builtin.{name}")
        assert config.BUILTIN_PARAMS[name]().model_dump(exclude={"name"}) == module.DEFAULT_PARAMS
