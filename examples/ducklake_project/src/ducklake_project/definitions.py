from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    """Everything under ``defs/``: the ``space`` pipeline of ``defs/space/defs.yaml``."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
