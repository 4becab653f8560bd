"""The one code location: autoload `defs/` (one concept per folder) and add shared resources."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import dagster as dg

from xcoin_pipelines.resources import build_resources

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


@functools.cache
def _build() -> dg.Definitions:
    """Built once per process: a run worker asks for the definitions twice (to load the job, then to
    plan it), and each `load_from_defs_folder` also re-derives the JSON schema of every installed
    component type (~0.25 CPU-s) before a backtest step can start. The objects are module-level
    anyway, so a second build could only return the same ones."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # In process by default: a UI materialization (one backtest) starts no step subprocess; jobs
        # that want parallel steps set their own executor. SQLite instance storage prefers it too.
        dg.Definitions(resources=build_resources(), executor=dg.in_process_executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return _build()
