"""A griffe extension for the docs' generated reference (mkdocs.yml loads it).

The code's docstrings name things with Sphinx roles (``:class:`PoolStats```), which Markdown
would show verbatim: render each as inline code instead.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    short, name = match[1], match[2]
    return f"`{name.rsplit('.', 1)[-1] if short else name}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring as inline code."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_as_code, obj.docstring.value)
