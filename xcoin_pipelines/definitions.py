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
        dg.Definitions(resources=build_resources()),
    )
