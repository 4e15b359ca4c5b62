"""The wheel and sdist build; the wheel installs in a fresh virtualenv; and the quickstart,
followed literally in a new ``django-admin startproject``, serves a pooled view, ``/health/``
and the admin against real PostgreSQL and HTTP servers.

The quickstart's steps are read from ``docs/quickstart.md`` (the blocks marked
``<!-- quickstart: NAME -->``) and the install command from ``README.md``, never copied here.
Dependencies install from a local wheelhouse (``.venv/wheelhouse``), filled from the package
index the first time and reused afterwards, so the virtualenvs install with ``--no-index``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import pooled_clients
from devservers.http import UpstreamServer
from devservers.ports import free_port
from devservers.postgres import APP_PASSWORD, PostgresCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO_ROOT / ".venv" / "wheelhouse"
# What the quickstart's settings name, replaced by the addresses of the suite's servers just
# as a reader puts in their own.
DOC_CONNINFO = "postgresql://app@db/warehouse"
DOC_PASSWORD = '"password": "secret"'
DOC_BASE_URL = "https://api.example.com/v1/"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Run in the fresh virtualenv: the app loads, passes its checks and builds a pool with no
# extra installed (no django-health-check, prometheus-client, httpx, OpenTelemetry or pytest).
SMOKE = """
import importlib.metadata as md
import importlib.util
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "pooled_clients"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    POOLED_CLIENTS={"api": {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
                            "OPTIONS": {"base_url": "https://user:pw@api.example.com/v1/"}}},
)
django.setup()
from django.core.management import call_command
call_command("check", fail_level="ERROR")
import pooled_clients
from pooled_clients import pools
with pools["api"].connection() as http:
    assert http.base_url == "https://user:pw@api.example.com/v1/"
assert "pw" not in pools["api"].stats().target
for extra in ("health_check", "prometheus_client", "httpx", "pytest", "opentelemetry"):
    assert importlib.util.find_spec(extra) is None, extra
plugins = [ep.value for ep in md.entry_points(group="pytest11")]
assert "pooled_clients.testing.plugin" in plugins, plugins
print("version", pooled_clients.__version__)
"""


def _run(cmd: list[str], cwd: Path, timeout: float,
         env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False, env=env)
    output = f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{' '.join(cmd)}\n{output}"
    return result.stdout


def _blocks(page: Path) -> dict[str, str]:
    """The code blocks of ``page`` marked ``<!-- quickstart: NAME -->``, by name."""
    text = page.read_text()
    found = re.findall(r"^<!-- quickstart: ([\w-]+) -->\n(?:<!-- test: \w+ -->\n)?"
                       r"```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"a quickstart block is marked twice in {page}"
    return dict(found)


def _commands(block: str) -> list[list[str]]:
    """The shell lines of a block, as argument lists (comments dropped)."""
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


@dataclass
class Dist:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The wheel and sdist that ``python -m build`` makes of the packaged files."""
    tmp = tmp_path_factory.mktemp("build")
    # Build from a copy of the packaged files only: the working tree has caches and a venv.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "pooled_clients", src / "pooled_clients",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "dist"
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(src)],
         cwd=src, timeout=150)
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return Dist(wheels[0], sdists[0])


def _fresh_virtualenv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def _pip_install(python: Path, args: list[str], cwd: Path) -> None:
    """``pip install ARGS`` from the wheelhouse alone; fill it from the index when it lacks
    something (pip's own cache keeps that cheap), then install again."""
    offline = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
               "--no-index", "--find-links", str(WHEELHOUSE), *args]
    first = subprocess.run(offline, cwd=cwd, capture_output=True, text=True, timeout=150,
                           check=False)
    if first.returncode == 0:
        return
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    requirements = [arg for arg in args if not arg.startswith("-")]
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
          "--wheel-dir", str(WHEELHOUSE), *requirements], cwd=cwd, timeout=240)
    # Only dependencies stay: an older build of this package must never stand in for the
    # one under test.
    for own in WHEELHOUSE.glob("django_pooled_clients-*"):
        own.unlink()
    _run(offline, cwd=cwd, timeout=150)


def test_built_wheel_installs_and_imports_in_a_fresh_virtualenv(dist: Dist,
                                                                tmp_path: Path) -> None:
    wheel = dist.wheel
    assert wheel.name == f"django_pooled_clients-{pooled_clients.__version__}-py3-none-any.whl"

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    for required in ("pooled_clients/py.typed", "pooled_clients/testing/plugin.py",
                     "pooled_clients/migrations/0001_initial.py"):
        assert required in names, required
    assert any(n.startswith("pooled_clients/templates/") for n in names)
    assert any(n.startswith("pooled_clients/static/") for n in names)
    top_level = {n.split("/")[0] for n in names}
    assert not top_level & {"tests", "devservers", "example_project", "benchmarks"}, top_level
    with tarfile.open(dist.sdist) as tf:
        sdist_names = tf.getnames()
    assert any(n.endswith("/pooled_clients/py.typed") for n in sdist_names)
    assert any(n.endswith("/README.md") for n in sdist_names)

    python = _fresh_virtualenv(tmp_path / "venv")
    _pip_install(python, [str(wheel)], cwd=tmp_path)
    _run([str(python), "-m", "pip", "check", "--disable-pip-version-check"], cwd=tmp_path,
         timeout=60)
    out = _run([str(python), "-c", SMOKE], cwd=tmp_path, timeout=60)
    assert f"version {pooled_clients.__version__}" in out


# --------------------------------------------------------------------------- the quickstart


@dataclass
class Project:
    python: Path
    bin: Path
    root: Path
    env: dict[str, str]

    def command(self, words: list[str]) -> list[str]:
        """A documented command line, run with the virtualenv's programs."""
        program, *args = words
        if program == "python":
            return [str(self.python), *args]
        assert (self.bin / program).exists(), f"{program} is not installed"
        return [str(self.bin / program), *args]


@pytest.fixture
def quickstart_project(dist: Dist, tmp_path: Path, postgres: PostgresCluster,
                       upstream: UpstreamServer) -> Project:
    """A fresh virtualenv with the wheel installed as the README says, and a project made
    and configured as the quickstart says."""
    readme, quickstart = _blocks(REPO_ROOT / "README.md"), _blocks(
        REPO_ROOT / "docs" / "quickstart.md")
    for name in ("install", "install-wheel"):
        assert readme.get(name) and readme[name] == quickstart.get(name), (
            f"README.md and docs/quickstart.md give different '{name}' instructions"
        )

    # Install: the README's wheel command, with the wheelhouse as the only index.
    work = tmp_path / "checkout"
    (work / "dist").mkdir(parents=True)
    shutil.copy2(dist.wheel, work / "dist" / dist.wheel.name)
    python = _fresh_virtualenv(tmp_path / "venv")
    installs = [words for words in _commands(readme["install-wheel"])
                if words[:2] == ["pip", "install"]]
    assert len(installs) == 1, readme["install-wheel"]
    target = installs[0][2]
    assert target == f"dist/{dist.wheel.name}[health]", (
        f"the README installs {target}; the build makes {dist.wheel.name}"
    )
    _pip_install(python, installs[0][2:], cwd=work)

    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
    project = Project(python, python.parent, tmp_path, env)

    # Create a project, then follow "Configure", "Serve it".
    for words in _commands(quickstart["startproject"]):
        if words[0] == "cd":
            project.root = project.root / words[1]
        else:
            _run(project.command(words), cwd=project.root, timeout=60, env=env)
    package = project.root / "mysite"
    settings_code = quickstart["settings"]
    for placeholder in (DOC_CONNINFO, DOC_PASSWORD, DOC_BASE_URL):
        assert settings_code.count(placeholder) == 1, placeholder
    settings_code = (settings_code
                     .replace(DOC_CONNINFO, postgres.conninfo("app", password=False))
                     .replace(DOC_PASSWORD, f'"password": {postgres.password!r}')
                     .replace(DOC_BASE_URL, upstream.url + "json/v1/"))
    with (package / "settings.py").open("a") as settings_file:
        settings_file.write("\n\n" + settings_code)
    (package / "views.py").write_text(quickstart["views"])
    (package / "urls.py").write_text(quickstart["urls"])
    return project


def _wait_until_serving(url: str, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"runserver exited with {proc.returncode}"
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout:g}s"
            time.sleep(0.1)


@pytest.fixture
def served(quickstart_project: Project, tmp_path: Path) -> Iterator[tuple[Project, str]]:
    """Run the quickstart's "Serve it" commands; yield the project and the site's URL."""
    project = quickstart_project
    commands = _commands(_blocks(REPO_ROOT / "docs" / "quickstart.md")["serve"])
    assert [words[:3] for words in commands] == [
        ["python", "manage.py", "migrate"], ["python", "manage.py", "createsuperuser"],
        ["python", "manage.py", "runserver"],
    ], commands
    _run(project.command(commands[0]), cwd=project.root, timeout=120, env=project.env)
    # createsuperuser asks its questions; these are the answers.
    _run(project.command([*commands[1], "--noinput", "--username", "admin",
                          "--email", "admin@example.com"]),
         cwd=project.root, timeout=60,
         env=dict(project.env, DJANGO_SUPERUSER_PASSWORD="quickstart-admin-pw"))
    port = free_port()
    log = (tmp_path / "runserver.log").open("w")
    proc = subprocess.Popen(
        project.command([*commands[2], "--noreload", f"127.0.0.1:{port}"]),
        cwd=project.root, env=project.env, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    site = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(site + "admin/login/", proc, timeout=60)
        yield project, site
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_quickstart_followed_literally_serves_a_pooled_view_health_and_admin(
        served: tuple[Project, str], tmp_path: Path) -> None:
    project, site = served
    log = tmp_path / "runserver.log"

    charge = requests.get(site + "charges/42/", timeout=15)
    assert charge.status_code == 200, f"{charge.text[:2000]}\n{log.read_text()[-3000:]}"
    body = charge.json()
    assert body["charge"]["path"] == "/json/v1/charges/42" and body["checked_at"], body

    html = requests.get(site + "health/", headers={"Accept": "text/html"}, timeout=15)
    assert html.status_code == 200, f"{html.text[:2000]}\n{log.read_text()[-3000:]}"
    assert "text/html" in html.headers["Content-Type"]
    data = requests.get(site + "health/?format=json", timeout=15)
    assert data.status_code == 200, data.text
    checks = data.json()
    assert checks and all(result == "OK" for result in checks.values()), checks
    assert {"Pool warehouse", "Pool payments"} <= set(
        checks), checks

    admin = requests.Session()
    admin.get(site + "admin/login/", timeout=15).raise_for_status()
    index = admin.post(
        site + "admin/login/?next=/admin/",
        data={"username": "admin", "password": "quickstart-admin-pw", "next": "/admin/",
              "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
        headers={"Referer": site + "admin/login/"}, timeout=15,
    )
    assert index.status_code == 200 and "Site administration" in index.text, index.text[:2000]
    assert "Pool status" in index.text
    status = admin.get(site + "admin/pooled_clients/poolstatus/", timeout=15)
    assert status.status_code == 200
    assert "warehouse" in status.text and "payments" in status.text
    for page in (charge, html, data, index, status):
        assert APP_PASSWORD not in page.text

    # "Look": the commands the quickstart shows run as shown.
    for words in _commands(_blocks(REPO_ROOT / "docs" / "quickstart.md")["look"]):
        out = _run(project.command(words), cwd=project.root, timeout=60, env=project.env)
        if words[2] == "pool_status":
            assert "warehouse" in out and "this command's own process" in out, out
