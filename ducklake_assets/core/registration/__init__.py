"""Registering source Parquet files into a DuckLake by reference, each file once, one snapshot per call.

:func:`register_files` does in one DuckLake transaction what the frozen-lake tooling does one file at a
time: it creates missing tables from their first file's schema, adds new columns when asked to, and
hands each table's new files to ``ducklake_add_data_files`` in a few calls. Files already in the
catalog (in any snapshot, or scheduled for deletion) are skipped by comparing normalised paths with
the catalog's ``ducklake_data_file`` rows, which reads no Parquet at all.

Two DuckLake behaviours shape the code:

* A list passed to ``ducklake_add_data_files`` costs one metadata query per entry, while a glob costs one
  parallel pass. Files that share a folder and a name prefix are therefore passed as one glob, after
  DuckDB's ``glob()`` confirmed that the glob names exactly those files.
* DuckLake answers ``count(col)`` and ``col IS NULL`` from table-level statistics. A file that lacks a
  column is read as NULLs there, but when the statistics already claim the column holds no NULLs (or the
  table gets its statistics in this very transaction) those answers come out wrong. Such files are
  refused; they are accepted where the statistics cannot lie (see :func:`_unsafe_missing_columns`).

The flow lives in :mod:`.register`; the globs in :mod:`.globs`, the footers and the schema-drift policy in
:mod:`.drift`, and what is read back from the catalog in :mod:`.inventory`.
"""

from .drift import BadFiles as BadFiles
from .drift import SchemaDrift as SchemaDrift
from .drift import check_policies as check_policies
from .inventory import TableSummary as TableSummary
from .inventory import registered_paths as registered_paths
from .inventory import table_summaries as table_summaries
from .inventory import tables_with_source_files as tables_with_source_files
from .register import RegistrationResult as RegistrationResult
from .register import SkippedFile as SkippedFile
from .register import register_files as register_files

__all__ = [
    "BadFiles",
    "RegistrationResult",
    "SchemaDrift",
    "SkippedFile",
    "TableSummary",
    "check_policies",
    "register_files",
    "registered_paths",
    "table_summaries",
    "tables_with_source_files",
]
