"""The shape every development server shares: ``start()``, ``stop()``, and ``with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """``with Server() as server:`` starts it and stops it (``close()`` on the way out)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """What leaving the ``with`` block does; ``stop()`` unless a server says otherwise."""
        self.stop()

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
