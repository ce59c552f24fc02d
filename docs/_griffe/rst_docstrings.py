"""A griffe extension for the docs build: the docstrings' reST-isms in Markdown.

The docstrings are Google-style with a few reST constructs that Markdown would print literally:
``:class:`X``` (and ``:func:``, ``:meth:``, ...) becomes the code span ``X``, and a
``.. code-block:: python`` directive with its indented body becomes a fenced code block.
"""

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`(~?)([^`]+)`")
DIRECTIVE = re.compile(
    r"^(?P<indent>[ ]*)\.\. code-block::[ ]*(?P<language>\w*)[ ]*\n[ ]*\n(?P<body>(?:(?P=indent)[ ]{4}.*\n|[ ]*\n)+)",
    re.MULTILINE,
)


def _role(match: re.Match[str]) -> str:
    short, target = match[1], match[2]
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _fence(match: re.Match[str]) -> str:
    indent = match["indent"]
    body = textwrap.dedent(match["body"]).strip("\n")
    fenced = f"```{match['language']}\n{body}\n```"
    return textwrap.indent(fenced, indent, lambda line: True) + "\n\n"


def markdown(text: str) -> str:
    return ROLE.sub(_role, DIRECTIVE.sub(_fence, text + "\n")).rstrip("\n")


class RestDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        pending: list[griffe.Object] = [pkg]
        while pending:
            obj = pending.pop()
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)
            pending.extend(member for member in obj.members.values() if not member.is_alias)
