"""The one code location: autoload `defs/` (one concept per folder) and add shared resources."""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg

from xcoin_pipelines.resources import build_resources

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # In process by default: a UI materialization (one backtest) starts no step subprocess; jobs
        # that want parallel steps set their own executor. SQLite instance storage prefers it too.
        dg.Definitions(resources=build_resources(), executor=dg.in_process_executor),
    )
