"""OpenTelemetry: the semantic-convention connection-pool metrics, read with the SDK."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from devservers.http import UpstreamServer
from pooled_clients import otel, pools
from pooled_clients.exceptions import PoolTimeout

Configure = Callable[[str, dict[str, Any]], None]
REPO = Path(__file__).resolve().parent.parent
_reader: list[InMemoryMetricReader] = []

UNITS = {
    "db.client.connection.count": "{connection}",
    "db.client.connection.idle.max": "{connection}",
    "db.client.connection.idle.min": "{connection}",
    "db.client.connection.max": "{connection}",
    "db.client.connection.pending_requests": "{request}",
    "db.client.connection.timeouts": "{timeout}",
    "db.client.connection.create_time": "s",
    "db.client.connection.wait_time": "s",
    "db.client.connection.use_time": "s",
}


@pytest.fixture
def reader(settings: Any) -> Iterator[InMemoryMetricReader]:
    """The process's one SDK provider (the global one can be set only once)."""
    if not _reader:
        _reader.append(InMemoryMetricReader())
        metrics.set_meter_provider(MeterProvider(metric_readers=[_reader[0]]))
    settings.POOLED_CLIENTS_OPENTELEMETRY = True
    otel.install()
    yield _reader[0]


def _points(reader: InMemoryMetricReader) -> dict[str, tuple[str, list[Any]]]:
    """name -> (unit, data points) of the db.client.connection metrics."""
    found: dict[str, tuple[str, list[Any]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name.startswith("db.client.connection"):
                    found[metric.name] = (metric.unit, list(metric.data.data_points))
    return found


def _of(points: list[Any], pool: str, **attributes: str) -> Any:
    matching = [p for p in points if p.attributes.get("db.client.connection.pool.name") == pool
                and all(p.attributes.get(k) == v for k, v in attributes.items())]
    assert len(matching) == 1, (pool, attributes, points)
    return matching[0]


def _http(upstream: UpstreamServer, **extra: Any) -> dict[str, Any]:
    return {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url}, **extra}


def test_ten_checkouts_a_timeout_and_a_creation_give_every_metric(
        reader: InMemoryMetricReader, upstream: UpstreamServer,
        pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("otelapi", _http(upstream, MIN_SIZE=0, MAX_SIZE=1))
    pool = pools["otelapi"]
    for _ in range(10):
        with pool.connection():
            pass
    with pool.connection(), pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.05)
    points = _points(reader)
    assert {name: unit for name, (unit, _) in points.items()} == UNITS
    name = "otelapi"
    count = points["db.client.connection.count"][1]
    assert _of(count, name, **{"db.client.connection.state": "idle"}).value == 1
    assert _of(count, name, **{"db.client.connection.state": "used"}).value == 0
    assert _of(points["db.client.connection.max"][1], name).value == 1
    assert _of(points["db.client.connection.idle.max"][1], name).value == 1
    assert _of(points["db.client.connection.idle.min"][1], name).value == 0
    assert _of(points["db.client.connection.pending_requests"][1], name).value == 0
    assert _of(points["db.client.connection.timeouts"][1], name).value == 1
    # 11 checkouts in all (the one held during the timeout too); none waited.
    wait = _of(points["db.client.connection.wait_time"][1], name)
    assert wait.count == 11 and wait.sum < 0.05
    create = _of(points["db.client.connection.create_time"][1], name)
    assert create.count == 1 and create.sum > 0
    use = _of(points["db.client.connection.use_time"][1], name)
    assert use.count == 11 and use.sum >= 0.05  # the last one was held over the timeout
    assert set(count[0].attributes) == {"db.client.connection.pool.name",
                                        "db.client.connection.state"}
    assert set(wait.attributes) == {"db.client.connection.pool.name"}


def test_an_endpoint_pool_reports_each_endpoint(
        reader: InMemoryMetricReader, upstream: UpstreamServer,
        pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("otelsvc", _http(upstream, ENDPOINTS={
        "a": {"OPTIONS": {"base_url": upstream.url}, "MAX_SIZE": 2},
        "b": {"OPTIONS": {"base_url": upstream.url}, "MAX_SIZE": 3}}))
    pool = pools["otelsvc"]
    with pool.connection(endpoint="a"):
        pass
    for _ in range(2):
        with pool.connection(endpoint="b"):
            pass
    points = _points(reader)
    assert _of(points["db.client.connection.max"][1], "otelsvc/a").value == 2
    assert _of(points["db.client.connection.max"][1], "otelsvc/b").value == 3
    assert _of(points["db.client.connection.wait_time"][1], "otelsvc/a").count == 1
    assert _of(points["db.client.connection.wait_time"][1], "otelsvc/b").count == 2
    assert not [p for p in points["db.client.connection.max"][1]
                if p.attributes["db.client.connection.pool.name"] == "otelsvc"]


_OFF_SCRIPT = """
import json, django
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
django.setup()
from pooled_clients import core, pools
pool = pools["api"]
for _ in range(3):
    with pool.connection():
        pass
data = reader.get_metrics_data()
names = [m.name for r in (data.resource_metrics if data else ()) for s in r.scope_metrics
         for m in s.metrics]
print(json.dumps({"names": names, "recording": core._recording["use"]}))
"""


def test_nothing_is_emitted_or_kept_with_the_setting_off(upstream: UpstreamServer) -> None:
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO),
           "PATH": "/usr/bin:/bin"}
    script = _OFF_SCRIPT.replace(
        "django.setup()",
        "from django.conf import settings\n"
        f"settings.POOLED_CLIENTS = {{'api': {json.dumps(_http(upstream))}}}\n"
        "django.setup()")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"names": [], "recording": False}
