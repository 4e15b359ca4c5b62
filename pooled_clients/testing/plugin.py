"""The pytest plugin (entry point ``pytest11``), active wherever the package is installed.

Fixtures:

``pooled_clients_settings``
    ``configure(alias, definition)`` replaces (or adds) one pool for the current test;
    the previous settings come back at teardown.
``pooled_clients_broken``
    ``broken(alias)`` makes a pool behave as if its service were down for the rest of the
    test: acquires raise ``ClientCreationError``, health checks fail.
``pooled_clients_no_leaks``
    Fails the test if any client is still checked out when it ends.

When the session ends, the plugin closes this process's pools at once and lists any client a
test never returned, rather than letting exit wait ``POOLED_CLIENTS_SHUTDOWN_TIMEOUT`` for
clients nobody will give back.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: Seconds the pools get at the end of the session for clients still in use: the tests are
#: over, so a client not returned by then never will be.
SESSION_END_TIMEOUT = 0.5

_never_returned = pytest.StashKey[list[str]]()


@pytest.fixture
def pooled_clients_settings() -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Replace one pool's definition for the duration of the test."""
    from django.conf import settings
    from django.test import override_settings

    overrides: list[tuple[Any, Any]] = []

    def configure(alias: str, definition: dict[str, Any]) -> None:
        current = dict(getattr(settings, "POOLED_CLIENTS", {}))
        current[alias] = definition
        override = override_settings(POOLED_CLIENTS=current)
        override.enable()
        overrides.append((override, settings.__dict__["_wrapped"]))

    try:
        yield configure
    finally:
        for override, holder in reversed(overrides):
            if settings.__dict__["_wrapped"] is holder:
                override.disable()
            else:
                # An @override_settings around the test ended first and already put the
                # settings back; disabling ours now would bring its values back to life.
                from django.core.signals import setting_changed

                setting_changed.send(sender=type(settings), setting="POOLED_CLIENTS",
                                     value=getattr(settings, "POOLED_CLIENTS", {}), enter=False)


@pytest.fixture
def pooled_clients_broken() -> Iterator[Callable[[str], None]]:
    """Make pools behave as if their service were down until the test ends."""
    from pooled_clients.testing.helpers import break_pool

    with contextlib.ExitStack() as stack:

        def broken(alias: str) -> None:
            stack.enter_context(break_pool(alias))

        yield broken


@pytest.fixture
def pooled_clients_no_leaks() -> Iterator[None]:
    """Fail the test when a client acquired from a pool is never released."""
    yield
    lines = _describe_leaks()
    if lines:
        pytest.fail("Clients were not released:\n" + "\n".join(lines), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close this process's pools now, giving clients still in use a short grace period."""
    # Only where the app was set up: the plugin is loaded in every project that has the package.
    lifecycle = sys.modules.get("pooled_clients.lifecycle")
    if lifecycle is None:
        return
    session.config.stash[_never_returned] = _describe_leaks()
    lifecycle.shutdown(timeout=SESSION_END_TIMEOUT)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List the clients that tests took from a pool and never returned."""
    lines = config.stash.get(_never_returned, [])
    if lines:
        terminalreporter.write_sep("-", "pooled_clients: clients never returned")
        for line in lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line("(the pooled_clients_no_leaks fixture makes such a test fail)")


def _describe_leaks() -> list[str]:
    from pooled_clients.testing.helpers import leaked_leases

    return [
        f"{alias}: held by {lease.thread} for {lease.held_for:.2f}s, acquired at {lease.where}"
        for alias, leases in leaked_leases().items() for lease in leases
    ]
