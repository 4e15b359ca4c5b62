"""``pool_status`` and ``pool_check``: output, JSON, and real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from devservers.ports import free_port
from devservers.postgres import APP_PASSWORD, PostgresCluster
from pooled_clients import pools

REPO = Path(__file__).resolve().parent.parent
Configure = Callable[[str, dict[str, Any]], None]


def _pg(conninfo: str, **extra: Any) -> dict[str, Any]:
    return {"BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
            "OPTIONS": {"conninfo": conninfo, "autocommit": True}, **extra}


def _manage(*args: str, pools_setting: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.observability_site.settings",
               PYTHONPATH=str(REPO), OBS_POOLED_CLIENTS=json.dumps(pools_setting))
    return subprocess.run([sys.executable, "-m", "django", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_pool_status_prints_a_table_of_every_pool(postgres: PostgresCluster,
                                                  pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("warehouse", _pg(postgres.conninfo("app"), MAX_SIZE=7))
    pooled_clients_settings("archive", _pg(postgres.conninfo("app")))
    with pools["warehouse"].connection() as conn:
        conn.execute("select 1")
    text = _run("pool_status")
    lines = text.splitlines()
    assert lines[1].split()[:7] == ["ALIAS", "STATE", "SIZE", "IDLE", "IN", "USE", "WAITING"]
    warehouse = next(line for line in lines if line.startswith("warehouse"))
    assert warehouse.split()[:7] == ["warehouse", "open", "1", "1", "0", "0", "7"]
    assert any(line.startswith("archive") for line in lines)
    assert APP_PASSWORD not in text
    assert "archive" not in _run("pool_status", "warehouse")


def test_pool_status_json_has_host_pid_and_pools(postgres: PostgresCluster,
                                                 pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("warehouse", _pg(postgres.conninfo("app")))
    text = _run("pool_status", "--json")
    data = json.loads(text)
    assert data["pid"] == os.getpid() and data["host"]
    assert [p["alias"] for p in data["pools"]] == ["warehouse"]
    assert {"in_use", "idle", "max_size", "acquired_total", "leases"} <= set(data["pools"][0])
    assert APP_PASSWORD not in text


def test_pool_check_passes_and_reports_max_connections(
        postgres: PostgresCluster, pooled_clients_settings: Configure) -> None:
    pooled_clients_settings("warehouse", _pg(postgres.conninfo("app"), MAX_SIZE=10))
    text = _run("pool_check", "--workers", "3")
    assert "warehouse: OK" in text
    max_connections = int(postgres.execute("SHOW max_connections")[0][0])
    assert (f"server max_connections {max_connections}; MAX_SIZE 10 x 3 worker(s) = 30"
            in text)
    assert "WARNING" not in text
    assert APP_PASSWORD not in text


def test_pool_check_warns_on_capacity_but_exits_0(postgres: PostgresCluster) -> None:
    result = _manage("pool_check", "--workers", "1000",
                     pools_setting={"warehouse": _pg(postgres.conninfo("app"), MAX_SIZE=10)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING warehouse: server max_connections" in result.stdout
    assert "= 10000 exceeds it" in result.stdout


def test_pool_check_exits_1_with_the_reason_when_the_server_is_down(
        postgres: PostgresCluster) -> None:
    down = free_port()  # nothing listens there
    conninfo = postgres.conninfo("app").replace(f":{postgres.port}/", f":{down}/")
    assert str(down) in conninfo
    result = _manage("pool_check", "--timeout", "2", pools_setting={
        "up": _pg(postgres.conninfo("app")),
        "down": _pg(conninfo, CONNECT_RETRIES=0),
    })
    assert result.returncode == 1, result.stdout + result.stderr
    assert "up: OK" in result.stdout
    failed = next(line for line in result.stdout.splitlines() if line.startswith("down:"))
    assert "FAILED" in failed and "ClientCreationError" in failed
    assert f"127.0.0.1:{down}" in failed or str(down) in failed
    assert "1 of 2 pool(s) failed: down" in result.stderr
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_pool_check_exits_2_for_an_unknown_alias(postgres: PostgresCluster) -> None:
    result = _manage("pool_check", "nope",
                     pools_setting={"warehouse": _pg(postgres.conninfo("app"))})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Unknown pool alias(es): nope" in result.stderr
    assert "configured: warehouse" in result.stderr


def test_call_command_failure_carries_exit_code_1(pooled_clients_settings: Configure) -> None:
    from django.core.management.base import CommandError

    pooled_clients_settings("down", _pg(f"postgresql://app:{APP_PASSWORD}@127.0.0.1:"
                                        f"{free_port()}/app", CONNECT_RETRIES=0))
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command("pool_check", "--timeout", "1", stdout=out)
    assert info.value.returncode == 1
    assert "down: FAILED" in out.getvalue() and APP_PASSWORD not in out.getvalue()


@pytest.mark.django_db
def test_pool_status_lists_published_workers_without_publishing_itself(
        settings: Any, postgres: PostgresCluster, pooled_clients_settings: Configure) -> None:
    import time

    from pooled_clients.models import WorkerStatus

    settings.POOLED_CLIENTS_SHARED_STATUS = "database"
    pooled_clients_settings("warehouse", _pg(postgres.conninfo("app")))
    snapshot = {"host": "web-9", "pid": 99, "published_at": time.time(),
                "pools": [{"alias": "warehouse", "in_use": 1, "size": 2, "max_size": 5}]}
    WorkerStatus.objects.create(host="web-9", pid=99, published_at=snapshot["published_at"],
                                payload=json.dumps(snapshot))
    text = _run("pool_status")
    assert "1 worker(s) publishing:" in text
    assert "web-9 pid 99" in text and "warehouse 1/2/5" in text
    assert WorkerStatus.objects.count() == 1
