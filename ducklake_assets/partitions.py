"""Registering a source one partition per run, so many runs (on many machines) fill one lake at once.

A partitioned pipeline's registration step and table assets share a partitions definition, and each
partition's files live in a folder below the source (:class:`~ducklake_assets.core.sources.PartitionFolders`).
A run of partition ``k`` lists and registers only that folder; runs of different partitions commit
side by side on a PostgreSQL catalog (two runs of one partition take turns, see
:mod:`ducklake_assets.core.claims`), so Dagster's executors and run launchers are the distributed engine.
"""

from dataclasses import dataclass

import dagster as dg

from .core.sources import PartitionFolders


@dataclass(frozen=True)
class SourcePartitions:
    """How a source splits into partitions: ``folder`` (e.g. ``"day={partition_key}"``) and ``definition``.

    ``definition`` ``None`` (the default) is a ``DynamicPartitionsDefinition`` named
    ``f"{pipeline}_partitions"`` whose keys the new-file sensor adds as new folders appear. Pass
    ``dg.DailyPartitionsDefinition(...)``, ``dg.StaticPartitionsDefinition([...])`` or your own dynamic
    definition instead; files in folders that name no partition of it are reported by the sensor and left
    unregistered.

    .. code-block:: python

        import dagster as dg
        from ducklake_assets import SourcePartitions

        by_day = SourcePartitions(
            folder="day={partition_key}",
            definition=dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1),
        )
    """

    folder: str = "{partition_key}"
    definition: dg.PartitionsDefinition | None = None

    def __post_init__(self) -> None:
        PartitionFolders(self.folder)  # refuses a template without {partition_key}

    @property
    def folders(self) -> PartitionFolders:
        return PartitionFolders(self.folder)

    def partitions_def(self, pipeline: str) -> dg.PartitionsDefinition:
        """The partitions definition of pipeline ``pipeline``."""
        return self.definition or dg.DynamicPartitionsDefinition(name=f"{pipeline}_partitions")
