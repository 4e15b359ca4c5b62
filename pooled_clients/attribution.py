"""Who a checkout is for: the view serving the request, or a name a task gave itself.

Every checkout reads :data:`current` once and records it in its lease;
:class:`~pooled_clients.middleware.PoolAttributionMiddleware` sets it to the request's view,
and :func:`attribute` sets it around a task or a command::

    with attribute("nightly-report"):
        run_report()

Outside both a checkout is attributed to ``"-"``. Pools count checkouts per view once
attribution is in use in the process (the middleware is loaded, or :func:`attribute` was
entered). Nothing here imports Django.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["OTHER", "UNATTRIBUTED", "attribute", "current"]

#: What a checkout made outside any request or :func:`attribute` block is attributed to.
UNATTRIBUTED = "-"
#: Where the views past the per-pool limit are counted together.
OTHER = "other"

#: The name the checkouts of this thread or task are attributed to.
current: ContextVar[str] = ContextVar("pooled_clients_attribution", default=UNATTRIBUTED)


@contextmanager
def attribute(name: str) -> Iterator[None]:
    """Attribute the checkouts made inside the block to ``name`` (a task, a command)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"attribute() takes a non-empty str name, not {name!r}")
    from pooled_clients import core

    core.record_views()
    token = current.set(name)
    try:
        yield
    finally:
        current.reset(token)
