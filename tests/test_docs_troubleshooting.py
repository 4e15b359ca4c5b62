"""The troubleshooting page quotes the messages the code really prints.

Each block of ``docs/troubleshooting.md`` marked ``<!-- message: NAME -->`` is a message with
``<...>`` where details vary; here each NAME's situation is brought about for real and the
message it produces must match the block, so the page cannot drift from the code.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from health_check.exceptions import ServiceUnavailable

from devservers.ports import free_port
from pooled_clients import PoolError, pools
from pooled_clients.conf import ERROR_IDS
from pooled_clients.health import PoolHealthCheck

PAGE = Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md"
Configure = Callable[[str, dict[str, Any]], None]
HTTP = "pooled_clients.backends.http.HTTPBackend"

_BLOCK = re.compile(r"^<!-- message: (?P<name>[\w-]+) -->\n```text\n(?P<text>.*?)\n^```",
                    re.MULTILINE | re.DOTALL)


def _documented() -> dict[str, str]:
    return {m["name"]: m["text"] for m in _BLOCK.finditer(PAGE.read_text())}


def _pattern(template: str) -> re.Pattern[str]:
    """``<...>`` stands for any text; everything else must be there as written."""
    return re.compile(".*?".join(re.escape(part) for part in re.split(r"<[^<>\n]+>", template)),
                      re.DOTALL)


def _http(**keys: Any) -> dict[str, Any]:
    return {"BACKEND": HTTP, "OPTIONS": {"base_url": "http://127.0.0.1:9/"}, **keys}


def _refused(**keys: Any) -> dict[str, Any]:
    # Nothing listens on a port that was free a moment ago: connecting is refused at once.
    return {"BACKEND": "pooled_clients.backends.tcp.TCPBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": free_port()}, **keys}


def _error(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except (PoolError, ImproperlyConfigured, ServiceUnavailable) as exc:
        return exc
    raise AssertionError("no error raised")


def _pool_timeout(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("busy", _http(MAX_SIZE=1))
    held = pools["busy"].acquire()
    try:
        return str(_error(lambda: pools["busy"].acquire(timeout=0.1)))
    finally:
        pools["busy"].release(held)


def _cannot_reach(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("down", _refused(CONNECT_RETRIES=0, TIMEOUT=1.0))
    _error(pools["down"].acquire)
    # Failing by now: the next caller is told at once.
    return str(_error(pools["down"].acquire))


def _could_not_open(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    # Attempts fail and the retries go on (each pause shorter than TIMEOUT) when the
    # caller's timeout runs out.
    configure("down", _refused(CONNECT_RETRIES=3, RETRY_BACKOFF=0.25, RETRY_BACKOFF_MAX=0.25,
                               TIMEOUT=0.3))
    return str(_error(pools["down"].acquire))


def _exhausted(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("queue", _http(MAX_SIZE=1, MAX_WAITING=1))
    pool = pools["queue"]
    held = pool.acquire()
    waiter = threading.Thread(target=lambda: pool.release(pool.acquire(timeout=10)))
    waiter.start()
    try:
        deadline = time.monotonic() + 10
        while pool.stats().waiting < 1:
            assert time.monotonic() < deadline, "the second caller never queued"
            time.sleep(0.01)
        return str(_error(lambda: pool.acquire(timeout=1)))
    finally:
        pool.release(held)
        waiter.join(10)


def _closed(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("old", _http())
    pool = pools["old"]
    pool.close(timeout=0)
    return str(_error(pool.acquire))


def _no_pool(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("api", _http())
    return str(_error(lambda: pools["no-such-pool"]))


def _no_endpoint(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("replicated", {"BACKEND": HTTP, "ENDPOINTS": {
        "primary": {"OPTIONS": {"base_url": "http://127.0.0.1:9/"}}}})
    return str(_error(lambda: pools["replicated"].acquire(endpoint="replica-9")))


def _release(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("api", _http())
    return str(_error(lambda: pools["api"].release(object())))


def _async_only(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("async_db", {"BACKEND": "pooled_clients.backends.postgres.AsyncPostgresBackend",
                           "OPTIONS": {"conninfo": "postgresql://app@127.0.0.1:9/app"}})
    return str(_error(pools["async_db"].acquire))


def _improperly_configured(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("typo", {"BACKEND": HTTP, "MAX_SIZ": 3})
    return str(_error(lambda: pools["typo"]))


def _health_down(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("down", _refused(CONNECT_RETRIES=0))
    return str(_error(PoolHealthCheck(alias="down").run))


def _health_misconfigured(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("typo", {"BACKEND": HTTP, "MAX_SIZ": 3})
    return str(_error(PoolHealthCheck(alias="typo").run))


def _logged(caplog: pytest.LogCaptureFixture, start: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for record in caplog.records:
            if record.name == "pooled_clients" and record.getMessage().startswith(start):
                assert record.levelno == logging.WARNING, record
                return record.getMessage()
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.02)


def _log_cannot_reach(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    _cannot_reach(configure, caplog)
    return _logged(caplog, "Pool 'down' cannot reach", timeout=5)


def _log_leak(configure: Configure, caplog: pytest.LogCaptureFixture) -> str:
    configure("leaky", _http(LEAK_TIMEOUT=0.1))
    held = pools["leaky"].acquire()
    try:
        return _logged(caplog, "Pool 'leaky': a client has been held", timeout=15)
    finally:
        pools["leaky"].release(held)


SITUATIONS: dict[str, Callable[[Configure, pytest.LogCaptureFixture], str]] = {
    "pool-timeout": _pool_timeout,
    "cannot-reach": _cannot_reach,
    "could-not-open": _could_not_open,
    "exhausted": _exhausted,
    "closed": _closed,
    "no-pool": _no_pool,
    "no-endpoint": _no_endpoint,
    "release": _release,
    "async-only": _async_only,
    "improperly-configured": _improperly_configured,
    "health-down": _health_down,
    "health-misconfigured": _health_misconfigured,
    "log-cannot-reach": _log_cannot_reach,
    "log-leak": _log_leak,
}


def test_every_documented_message_is_checked_here() -> None:
    assert set(_documented()) == set(SITUATIONS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(SITUATIONS))
def test_documented_message_matches_the_real_one(
        name: str, pooled_clients_settings: Configure, caplog: pytest.LogCaptureFixture) -> None:
    template = _documented()[name]
    caplog.set_level(logging.INFO, logger="pooled_clients")
    message = SITUATIONS[name](pooled_clients_settings, caplog)
    assert _pattern(template).fullmatch(message), (
        f"docs/troubleshooting.md ({name}) says:\n{template}\nthe code says:\n{message}"
    )


def test_every_system_check_id_is_listed() -> None:
    page = PAGE.read_text()
    for check_id in ERROR_IDS:
        assert f"| `{check_id}` |" in page, check_id
