"""``PoolAttributionMiddleware``: attribute every checkout made for a request to its view.

Add ``"pooled_clients.middleware.PoolAttributionMiddleware"`` to ``MIDDLEWARE``; each pool's
stats then count checkouts, waits and hold times per view (``PoolStats.by_view``), and each
lease names the view holding it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from pooled_clients import attribution, core

__all__ = ["PoolAttributionMiddleware"]


class PoolAttributionMiddleware:
    """Sets the attribution to ``request.resolver_match.view_name`` once the URL is
    resolved (in ``process_view``), and back to what it was after the response."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        core.record_views()

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        token = attribution.current.set(attribution.UNATTRIBUTED)
        try:
            return self.get_response(request)
        finally:
            attribution.current.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        token = attribution.current.set(attribution.UNATTRIBUTED)
        try:
            response: Awaitable[HttpResponseBase] = self.get_response(request)
            return await response
        finally:
            attribution.current.reset(token)

    def process_view(self, request: HttpRequest, view_func: Callable[..., Any],
                     view_args: Any, view_kwargs: Any) -> None:
        """The URL is resolved: attribute what follows to its view."""
        match = request.resolver_match
        if match is not None and match.view_name:
            attribution.current.set(match.view_name)
