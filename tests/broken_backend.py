"""A backend whose check accepts OPTIONS that its constructor then refuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pooled_clients.backends.base import ClientBackend


class RefusingBackend(ClientBackend[object]):
    """Accepts every OPTIONS in its check, then refuses them when built."""

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        raise ValueError("this backend refuses its options")
