"""The wheel and sdist build, and the wheel works in a fresh virtualenv with only core deps."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import pooled_clients

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Run in the fresh virtualenv: the app loads, passes its checks and builds a pool with no
# extra installed (no django-health-check, prometheus-client, httpx or pytest).
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
for extra in ("health_check", "prometheus_client", "httpx", "pytest"):
    assert importlib.util.find_spec(extra) is None, extra
plugins = [ep.value for ep in md.entry_points(group="pytest11")]
assert "pooled_clients.testing.plugin" in plugins, plugins
print("version", pooled_clients.__version__)
"""


def _run(cmd: list[str], cwd: Path, timeout: float) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False)
    output = f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{' '.join(cmd)}\n{output}"
    return result.stdout


def test_built_wheel_installs_and_imports_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    # Build from a copy of the packaged files only: the working tree has caches and a venv.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "pooled_clients", src / "pooled_clients",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(src)],
         cwd=src, timeout=150)

    wheels = list(dist.glob("*.whl"))
    sdists = list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    wheel = wheels[0]
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
    with tarfile.open(sdists[0]) as tf:
        sdist_names = tf.getnames()
    assert any(n.endswith("/pooled_clients/py.typed") for n in sdist_names)
    assert any(n.endswith("/README.md") for n in sdist_names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
         cwd=tmp_path, timeout=150)
    _run([python, "-m", "pip", "check", "--disable-pip-version-check"], cwd=tmp_path, timeout=60)
    out = _run([python, "-c", SMOKE], cwd=tmp_path, timeout=60)
    assert f"version {pooled_clients.__version__}" in out
