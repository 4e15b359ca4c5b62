"""The generated reference (mkdocstrings, ``docs/reference/``) covers the public API."""

from __future__ import annotations

import re
from pathlib import Path

import pooled_clients
import pooled_clients.exceptions

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"


def _directives() -> set[str]:
    found = set()
    for page in REFERENCE.glob("*.md"):
        found |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(), re.MULTILINE))
    return found


def _documented(obj: object, directives: set[str]) -> bool:
    """Named by a directive itself, or inside a module a directive renders whole."""
    module, name = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", "")
    return f"{module}.{name}" in directives or module in directives


def test_every_public_name_has_a_reference_entry() -> None:
    directives = _directives()
    missing = [name for name in pooled_clients.__all__ if name != "pools"
               and not _documented(getattr(pooled_clients, name), directives)]
    assert not missing, f"not in docs/reference/: {missing}"
    # ``pools`` is the instance of PoolHandler.
    assert _documented(pooled_clients.PoolHandler, directives)


def test_every_error_has_a_reference_entry() -> None:
    directives = _directives()
    for name in pooled_clients.exceptions.__all__:
        assert _documented(getattr(pooled_clients.exceptions, name), directives), name
