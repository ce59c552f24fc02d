"""Dagster metadata: the type every asset and check reports with, and its one Markdown table helper."""

from collections.abc import Sequence
from typing import Any, TypeAlias

import dagster as dg

MetadataEntry: TypeAlias = dg.MetadataValue | dg.TableSchema | dg.AssetKey | str | int | float | bool | None
"""One metadata value: a ``dg.MetadataValue`` or a plain value Dagster wraps in one."""

Metadata: TypeAlias = dict[str, MetadataEntry]
"""The metadata of a materialization, observation or check result, as ``MaterializeResult(metadata=...)`` takes."""


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table for ``dg.MetadataValue.md``: one line per row, ``None`` shown as an empty cell.

    Cell text is folded onto one line and its ``|`` escaped, so a SQL statement, an error message or a
    file name cannot break the table.
    """

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return " ".join(text.split()).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines.extend("| " + " | ".join(cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines)
