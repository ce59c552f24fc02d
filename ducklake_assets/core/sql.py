"""The one place where SQL text is assembled from names and values.

Identifiers are quoted by :func:`quote_identifier`; values are bound as parameters wherever DuckDB
allows it. Where it does not (``ATTACH`` paths, ``CREATE SECRET`` fields, option lists) literals are
escaped by :func:`quote_literal`. Nothing else in the library builds SQL from user values.
"""

import json
from collections.abc import Mapping, Sequence

from .errors import ConfigurationError

OptionValue = str | int | float | bool


def quote_identifier(name: str) -> str:
    """Return ``name`` as a double-quoted SQL identifier, safe for any characters.

    NUL bytes and empty names cannot be represented, so they are rejected.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"SQL identifier must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ConfigurationError(f"SQL identifier {name!r} contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def qualified_name(*parts: str) -> str:
    """Join identifiers with dots, each quoted: ``qualified_name('lake', 'main', 't')``."""
    return ".".join(quote_identifier(part) for part in parts)


def quote_literal(value: str) -> str:
    """Return ``value`` as a single-quoted SQL string literal."""
    if not isinstance(value, str):
        raise ConfigurationError(f"SQL literal must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ConfigurationError("SQL literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def option_value(value: OptionValue) -> str:
    """Render a typed option value (string, integer, float or boolean) as SQL."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return quote_literal(value)


def options_clause(options: Mapping[str, OptionValue | Mapping[str, str]], *, what: str = "option") -> str:
    """Render ``{'DATA_PATH': 'x', 'READ_ONLY': True}`` as `` (DATA_PATH 'x', READ_ONLY true)``.

    Option names are keywords, not identifiers, so they are checked to be plain words (``what`` names
    them in the error) and upper-cased; of two spellings of one name the later wins. A mapping of
    strings becomes a ``MAP {'KEY': 'value'}``. No options, no clause.
    """
    rendered: dict[str, str] = {}
    for name, value in options.items():
        if not isinstance(name, str) or not name.replace("_", "").isalnum() or not name.isascii():
            raise ConfigurationError(f"{what} name {name!r} must be a plain word like DATA_INLINING_ROW_LIMIT")
        if isinstance(value, Mapping):
            entries = ", ".join(f"{quote_literal(key)}: {quote_literal(item)}" for key, item in value.items())
            rendered[name.upper()] = f"MAP {{{entries}}}"
        else:
            rendered[name.upper()] = option_value(value)
    return " (" + ", ".join(f"{name} {value}" for name, value in rendered.items()) + ")" if rendered else ""


#: SQL for a list of strings bound as one JSON parameter (see :func:`string_list`).
STRING_LIST = "from_json(?, '[\"VARCHAR\"]')"


def string_list(values: Sequence[str]) -> str:
    """The parameter for :data:`STRING_LIST`: a list of strings as one JSON text.

    A Python list bound as a DuckDB parameter is converted element by element, and each conversion
    tries ``import pandas`` twice (thousands of failed imports for a few thousand paths where pandas is
    not installed); one string is converted once.
    """
    return json.dumps(list(values))
