"""The all-workers page of a fleet: two gunicorn masters standing for two hosts, sharing
Django's RedisCache on a real redis-server."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from devservers.http import UpstreamServer
from devservers.redis import RedisServer
from tests.observability_site.server import ADMIN_PASSWORD, ADMIN_USER, Site, serve
from tests.test_admin import _save, browser  # noqa: F401  (the real-browser fixture)

URL = "/admin/pooled_clients/poolstatus/"
MAX_AGE = 3.0
# Host ids as clouds name machines: long, without spaces.
A, B = "web-a.eu-west-1.compute.internal", "web-b.eu-west-1.compute.internal"


def _serve_every_worker(site: Site) -> None:
    workers = site.worker_pids()
    served: set[int] = set()
    lock = threading.Lock()

    def work(_: int) -> None:
        pid = requests.get(f"{site.url}/work/?hold=0.05", timeout=10).json()["pid"]
        with lock:
            served.add(pid)

    with ThreadPoolExecutor(4) as executor:
        for _ in range(30):
            list(executor.map(work, range(4)))
            if served == workers:
                return
    assert served == workers


def _fleet(session: requests.Session, site: Site) -> dict[str, Any]:
    data: dict[str, Any] = session.get(f"{site.url}{URL}?format=json", timeout=10).json()
    return data


def _hosts(data: dict[str, Any]) -> dict[str, set[int]]:
    hosts: dict[str, set[int]] = {}
    for worker in data["workers"]:
        hosts.setdefault(worker["host"], set()).add(worker["pid"])
    return hosts


@pytest.mark.slow
def test_two_hosts_on_one_page_grouped_totalled_and_a_killed_host_ages_out(
        upstream: UpstreamServer, redis_server: RedisServer, browser: Any,  # noqa: F811
        test_output_dir: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    http = {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url}, "MAX_SIZE": 5}
    definitions = {"api": http, "payments": http, "search": http}
    shared = {"OBS_SHARED_STATUS": '{"CACHE": "shared"}', "OBS_REDIS": redis_server.url,
              "OBS_SHARED_INTERVAL": "0.5", "OBS_SHARED_MAX_AGE": str(MAX_AGE)}
    with serve(2, definitions, POOLED_CLIENTS_HOST=A, **shared) as a, \
            serve(2, definitions, POOLED_CLIENTS_HOST=B, **shared) as b:
        _serve_every_worker(a)
        _serve_every_worker(b)
        expected = {A: a.worker_pids(), B: b.worker_pids()}
        session = a.login()
        deadline = time.monotonic() + 15
        while _hosts(data := _fleet(session, a)) != expected:
            assert time.monotonic() < deadline, (_hosts(data), expected)
            time.sleep(0.2)

        # Totals add up over both hosts' workers.
        (total,) = [t for t in data["totals"] if t["alias"] == "api"]
        pools = [p for w in data["workers"] for p in w["pools"] if p["alias"] == "api"]
        assert total["workers"] == 4 and total["max_size"] == 20
        assert total["acquired_total"] == sum(p["acquired_total"] for p in pools) > 0
        assert {w["server"] for w in data["workers"]} == {"gunicorn"}

        # Grouped by host on the page, each host's workers under it.
        html = session.get(f"{a.url}{URL}", timeout=10).text
        for host, pids in expected.items():
            start = html.index(f'<tbody class="pc-host" data-host="{host}">')
            group = html[start:html.index("</tbody>", start)]
            for pid in pids:
                assert f'data-pid="{pid}"' in group
        assert redis_server.password not in html

        # A real browser shows both hosts, on a desktop and on a phone.
        browser.get(f"{a.url}/admin/login/?next={URL}")
        browser.find_element(By.NAME, "username").send_keys(ADMIN_USER)
        browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".pc-host"))
        shown = browser.execute_script(
            "return [...document.querySelectorAll('tbody.pc-host')].map(e => e.dataset.host);")
        assert shown == [A, B]
        _save(browser, test_output_dir / "pool-status-fleet.png")
        browser.set_window_size(390, 844)
        browser.refresh()
        WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".pc-host"))
        fits = browser.execute_script(
            "const t = document.querySelector('.pc-worker-list');"
            "const w = t.parentElement;"
            "return [t.getBoundingClientRect().width <= w.clientWidth + 1,"
            " w.getBoundingClientRect().right <= window.innerWidth + 1];")
        assert fits == [True, True]
        _save(browser, test_output_dir / "pool-status-fleet-mobile.png")

        # Host b dies at once (master and workers SIGKILLed): its workers age out.
        for pid in (b.process.pid, *expected[B]):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        while B in _hosts(_fleet(session, a)):
            assert time.monotonic() - killed < MAX_AGE + 3, "host b stayed on the page"
            time.sleep(0.2)
        assert _hosts(_fleet(session, a)) == {A: expected[A]}
