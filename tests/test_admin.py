"""The admin "Pool status" page: permissions, content, JSON, and a real browser."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from devservers.http import UpstreamServer
from devservers.postgres import APP_PASSWORD, PostgresCluster
from pooled_clients import pools
from pooled_clients.attribution import attribute

URL = "/admin/pooled_clients/poolstatus/"


@pytest.fixture
def two_pools(postgres: PostgresCluster, upstream: UpstreamServer,
              pooled_clients_settings: Callable[[str, dict[str, Any]], None]) -> None:
    pooled_clients_settings("warehouse", {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": postgres.conninfo("app"), "autocommit": True},
        "MAX_SIZE": 4,
    })
    pooled_clients_settings("payments", {
        "BACKEND": "pooled_clients.backends.http.HTTPBackend",
        "OPTIONS": {"base_url": upstream.url, "headers": {"Authorization": "Bearer tok-XYZ"}},
    })


@pytest.fixture
def held_client() -> Iterator[str]:
    """A warehouse client held by a thread named ``report-builder`` until the test ends."""
    acquired, done = threading.Event(), threading.Event()

    def hold() -> None:
        with pools["warehouse"].connection() as conn:
            conn.execute("select 1")
            acquired.set()
            done.wait(30)

    thread = threading.Thread(target=hold, name="report-builder", daemon=True)
    thread.start()
    assert acquired.wait(10)
    try:
        yield thread.name
    finally:
        done.set()
        thread.join(10)


def _staff(django_user_model: Any, username: str, *, permitted: bool = False,
           superuser: bool = False) -> Any:
    user = django_user_model.objects.create_user(
        username, password="pw", is_staff=True, is_superuser=superuser)
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="view_pool_status"))
    return user


def test_url_name_resolves() -> None:
    assert reverse("admin:pooled_clients_poolstatus_changelist") == URL


@pytest.mark.django_db
def test_anonymous_is_redirected_to_login(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert client.get(URL + "?format=json").status_code == 302


@pytest.mark.django_db
def test_staff_without_permission_gets_403_and_no_index_entry(
        client: Client, django_user_model: Any) -> None:
    client.force_login(_staff(django_user_model, "plain"))
    assert client.get(URL).status_code == 403
    assert client.get(URL + "?format=json").status_code == 403
    index = client.get("/admin/")
    assert index.status_code == 200
    assert URL not in index.content.decode()
    assert "Pool status" not in index.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["permitted", "superuser"])
def test_permitted_staff_and_superuser_see_page_and_index_entry(
        client: Client, django_user_model: Any, kind: str, two_pools: None) -> None:
    user = _staff(django_user_model, kind, permitted=kind == "permitted",
                  superuser=kind == "superuser")
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-alias="warehouse"' in html and 'data-alias="payments"' in html
    index = client.get("/admin/").content.decode()
    assert URL in index and "Pool status" in index


@pytest.mark.django_db
def test_page_lists_every_pool_and_held_client_with_its_thread(
        admin_client: Client, two_pools: None, held_client: str, postgres: PostgresCluster,
        upstream: UpstreamServer) -> None:
    with pools["payments"].connection() as http:
        http.get("echo/1").raise_for_status()
    html = admin_client.get(URL).content.decode()
    assert html.count('class="pc-pool"') == 2
    assert held_client in html
    assert "test_admin.py" in html  # where the held client was acquired
    assert "Request p50" in html  # the HTTP pool's request latency
    assert APP_PASSWORD not in html and "tok-XYZ" not in html
    assert f"127.0.0.1:{postgres.port}" in html or str(postgres.port) in html


@pytest.mark.django_db
def test_json_format_has_host_pid_and_pool_stats(
        admin_client: Client, two_pools: None, held_client: str) -> None:
    import os

    response = admin_client.get(URL + "?format=json")
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["pid"] == os.getpid() and data["host"]
    assert "workers" not in data
    by_alias = {p["alias"]: p for p in data["pools"]}
    assert set(by_alias) == {"warehouse", "payments"}
    warehouse = by_alias["warehouse"]
    assert warehouse["in_use"] == 1 and warehouse["max_size"] == 4
    assert [lease["thread"] for lease in warehouse["leases"]] == [held_client]
    text = response.content.decode()
    assert APP_PASSWORD not in text and "tok-XYZ" not in text


@pytest.mark.django_db
def test_fragment_is_the_status_block_only(admin_client: Client, two_pools: None) -> None:
    html = admin_client.get(URL + "?format=fragment").content.decode()
    assert 'data-alias="warehouse"' in html
    assert "<html" not in html


# --------------------------------------------------------------------------- real browser


@pytest.fixture
def browser(tmp_path: Any) -> Iterator[Any]:
    """Headless Debian Chromium driven by Selenium, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _save(driver: Any, path: Any) -> None:
    import os
    import shutil
    from pathlib import Path

    assert driver.save_screenshot(str(path))
    docs_images = os.environ.get("POOLED_CLIENTS_DOCS_IMAGES")
    if docs_images:  # scripts/…: refresh the screenshots of docs/observability.md
        shutil.copy(path, Path(docs_images) / Path(path).name)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_browser_shows_live_numbers_and_saves_screenshots(
        browser: Any, live_server: Any, django_user_model: Any, two_pools: None,
        held_client: str, test_output_dir: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    django_user_model.objects.create_superuser("admin", "", "admin-pw")
    with attribute("payments:refund"), pools["payments"].connection() as http:
        for path in ("echo/1", "json/a", "status/503", "echo/2"):
            http.get(path)
    for view, rounds in (("orders:list", 3), ("reports:monthly", 1)):
        with attribute(view):
            for _ in range(rounds):
                with pools["warehouse"].connection() as conn:
                    conn.execute("select pg_sleep(0.02)")
    browser.get(live_server.url + "/admin/login/?next=" + URL)
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("admin-pw")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.ID, "pc-status"))

    # The page replaces its status section on every refresh, so each read
    # happens inside one script call: an element found by one WebDriver
    # command may be gone by the next.
    def read(script: str) -> Any:
        return browser.execute_script(script)

    def in_use() -> str:
        return str(read(
            "const e = document.querySelector("
            "'section[data-alias=\"warehouse\"] .pc-in-use');"
            "return e ? e.textContent.trim() : '';"))

    assert in_use() == "1"
    assert held_client in read("return document.getElementById('pc-status').innerText;")
    # The stylesheet and script loaded (the page is styled and live).
    bar_height = read(
        "return document.querySelector('section[data-alias=\"warehouse\"] .pc-bar')"
        ".getBoundingClientRect().height;")
    assert bar_height > 5
    _save(browser, test_output_dir / "pool-status.png")

    browser.execute_script("window.__noReload = true;")
    second = pools["warehouse"].acquire()
    try:
        WebDriverWait(browser, 15, poll_frequency=0.2).until(lambda d: in_use() == "2")
        assert browser.execute_script("return window.__noReload === true;")
        assert int(read("return document.getElementById('pc-root').dataset.refreshes;")) >= 1
    finally:
        pools["warehouse"].release(second)
    WebDriverWait(browser, 15, poll_frequency=0.2).until(lambda d: in_use() == "1")
    page = browser.page_source
    assert APP_PASSWORD not in page and "tok-XYZ" not in page

    # Readable on a phone: nothing wider than the screen.
    browser.set_window_size(390, 844)
    browser.refresh()
    WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.ID, "pc-status"))
    width = browser.execute_script(
        "return document.getElementById('pc-status').getBoundingClientRect().right;")
    assert width <= browser.execute_script("return window.innerWidth;") + 1
    _save(browser, test_output_dir / "pool-status-mobile.png")
