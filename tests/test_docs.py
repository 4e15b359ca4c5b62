"""The documentation cannot drift: generated tables match the schema and code blocks run.

Code blocks in ``docs/*.md`` are tested when an HTML comment (invisible in the built site)
directly precedes the fence:

- ``<!-- test: settings -->``: settings code; executed, then every pool in its
  ``POOLED_CLIENTS`` must pass the system checks' validation.
- ``<!-- test: run -->``: executed (top-level ``await`` allowed) with the pools ``warehouse``
  (the test PostgreSQL cluster) and ``payments`` (the test HTTP upstream, base URL
  ``<upstream>/json/v1/``) configured; no client may be left checked out.
- ``<!-- test: pytest -->``: a test module; all of them run in one pytest subprocess, with the
  plugin loaded from its entry point and the same two pools in the project's settings.
- ``<!-- test: example -->``: a worked example, settings and code in one block. Its top-level
  statements up to the last ``POOLED_CLIENTS = ...`` are its settings: they run first (with
  the environment variables of ``_example_environment`` pointing at the test servers), each
  pool must pass validation and is configured, ``CACHES`` too when the block sets it; then the
  rest runs (top-level ``await`` allowed). No client may be left checked out.

``mkdocs build --strict`` itself runs in ``scripts/test``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest

from devservers.grpc import GRPCHealthServer
from devservers.http import UpstreamServer
from devservers.postgres import PostgresCluster
from devservers.redis import RedisServer
from devservers.websocket import WebSocketEchoServer
from pooled_clients import PoolStats
from pooled_clients.conf import validate_definition
from pooled_clients.stats import Lease
from pooled_clients.testing import leaked_leases

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
Configure = Callable[[str, dict[str, Any]], None]

_BLOCK = re.compile(
    r"^<!-- test: (?P<kind>\w+) -->\n```python[^\n]*\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


class Snippet(NamedTuple):
    kind: str
    page: str
    line: int
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _snippets() -> list[Snippet]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            found.append(Snippet(match["kind"], page.name, line, match["code"]))
    return found


SNIPPETS = _snippets()


def _of_kind(kind: str) -> list[Any]:
    return [pytest.param(s, id=s.id) for s in SNIPPETS if s.kind == kind]


def _pool_definitions(postgres: PostgresCluster, upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "warehouse": {
            "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
            "OPTIONS": {"conninfo": postgres.conninfo("app"), "autocommit": True},
        },
        "payments": {
            "BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url + "json/v1/", "timeout": 5,
                        "health_path": "health"},
        },
    }


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", REPO_ROOT / "scripts" / "gen_config_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- generated parts


def test_configuration_reference_matches_the_settings_schema() -> None:
    generator = _load_generator()
    page = (DOCS / "configuration.md").read_text()
    assert generator.render(page) == page, (
        "docs/configuration.md is out of date: run .venv/bin/python scripts/gen_config_reference.py"
    )


def test_reference_lists_every_key_and_check_id() -> None:
    from pooled_clients.conf import ERROR_IDS, POOL_KEYS, PROCESS_SETTINGS

    page = (DOCS / "configuration.md").read_text()
    for name in [k.name for k in POOL_KEYS] + [s.name for s in PROCESS_SETTINGS]:
        assert f"| `{name}` |" in page, name
    for check_id in ERROR_IDS:
        assert f"| `{check_id}` |" in page, check_id


def test_api_reference_names_every_stats_field_and_error() -> None:
    page = (DOCS / "api.md").read_text()
    for cls in (PoolStats, Lease):
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in page, f"{cls.__name__}.{f.name} is not documented"
    import pooled_clients.exceptions as exceptions

    for name in exceptions.__all__:
        assert f"`{name}" in page, f"{name} is not documented"


def test_the_docs_have_tested_snippets_of_every_kind() -> None:
    # A broken marker would silently test nothing.
    kinds = {s.kind for s in SNIPPETS}
    assert kinds == {"settings", "run", "pytest", "example"}, kinds


# --------------------------------------------------------------------------- settings blocks


@pytest.mark.parametrize("snippet", _of_kind("settings"))
def test_settings_snippet_passes_the_system_checks(snippet: Snippet) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(snippet.code, snippet.id, "exec"), namespace)
    definitions = namespace["POOLED_CLIENTS"]
    assert definitions
    for alias, definition in definitions.items():
        assert validate_definition(alias, definition) == [], alias
    if "INSTALLED_APPS" in namespace:
        assert "pooled_clients" in namespace["INSTALLED_APPS"]


# --------------------------------------------------------------------------- runnable blocks


@pytest.mark.timeout(60)
@pytest.mark.parametrize("snippet", _of_kind("run"))
def test_runnable_snippet_runs(snippet: Snippet, postgres: PostgresCluster,
                               upstream: UpstreamServer,
                               pooled_clients_settings: Configure) -> None:
    for alias, definition in _pool_definitions(postgres, upstream).items():
        pooled_clients_settings(alias, definition)
    code = compile(snippet.code, snippet.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, {"__name__": "docs_snippet"})
    if inspect.iscoroutine(result):
        asyncio.run(result)
    assert leaked_leases() == {}


# --------------------------------------------------------------------------- worked examples


def _example_environment(redis: RedisServer, ws: WebSocketEchoServer,
                         grpc: GRPCHealthServer, upstream: UpstreamServer) -> dict[str, str]:
    """What the worked examples read from ``os.environ``: the test servers' addresses."""
    assert redis.password is not None
    return {
        "ACME_BASE_URL": upstream.url + "json/v2/",
        "PROBE_HOSTS": f"{upstream.host}:{upstream.port},localhost:{upstream.port}",
        "REDIS_URL": f"redis://{redis.host}:{redis.port}",
        "REDIS_PASSWORD": redis.password,
        "MARKET_WS_URL": ws.url,
        "MARKET_TOKEN": "market-token-for-docs",
        "AUTHORIZER_TARGET": grpc.target,
        "AUTHORIZER_API_KEY": "authorizer-key-for-docs",
    }


def _settings_end(tree: ast.Module) -> int:
    """Index after the last top-level ``POOLED_CLIENTS = ...`` statement."""
    ends = [i + 1 for i, node in enumerate(tree.body) if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "POOLED_CLIENTS" for t in node.targets)]
    assert ends, "a worked example defines POOLED_CLIENTS"
    return ends[-1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("snippet", _of_kind("example"))
def test_worked_example_runs_against_real_servers(
        snippet: Snippet, redis_server: RedisServer, ws_server: WebSocketEchoServer,
        grpc_server: GRPCHealthServer, upstream: UpstreamServer,
        monkeypatch: pytest.MonkeyPatch, pooled_clients_settings: Configure) -> None:
    from django.test import override_settings

    for name, value in _example_environment(redis_server, ws_server, grpc_server,
                                            upstream).items():
        monkeypatch.setenv(name, value)
    tree = ast.parse(snippet.code)
    end = _settings_end(tree)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    settings_part = ast.Module(body=tree.body[:end], type_ignores=[])
    exec(compile(settings_part, snippet.id, "exec"), namespace)
    for alias, definition in namespace["POOLED_CLIENTS"].items():
        assert validate_definition(alias, definition) == [], alias
        pooled_clients_settings(alias, definition)
    code_part = ast.Module(body=tree.body[end:], type_ignores=[])
    with contextlib.ExitStack() as stack:
        if "CACHES" in namespace:
            stack.enter_context(override_settings(CACHES=namespace["CACHES"]))
        code = compile(code_part, snippet.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    assert leaked_leases() == {}


# --------------------------------------------------------------------------- pytest blocks

_LEAKING_TEST = '''
from pooled_clients import pools


def test_forgets_to_release(pooled_clients_no_leaks):
    pools["warehouse"].acquire()
'''


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_pytest_snippets_pass_with_the_installed_plugin(
        tmp_path: Path, postgres: PostgresCluster, upstream: UpstreamServer) -> None:
    blocks = [s for s in SNIPPETS if s.kind == "pytest"]
    assert blocks
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "docs_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n\n"
        f"POOLED_CLIENTS = {_pool_definitions(postgres, upstream)!r}\n"
    )
    names = {}
    for number, snippet in enumerate(blocks):
        module = f"test_doc_{number:02d}"
        names[module] = snippet.id
        (tmp_path / f"{module}.py").write_text(snippet.code)
    # Files run in name order: the leaking test runs last, leaving the others unaffected.
    (tmp_path / "test_zz_leak.py").write_text(_LEAKING_TEST)
    report = tmp_path / "report.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO_ROOT)]))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "--ds", "docs_settings",
         "-o", "timeout=60", f"--junitxml={report}", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110,
    )
    assert report.exists(), f"pytest did not run:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes: dict[str, list[str]] = {}
    for case in cases:
        problems = [el.get("message", "") + (el.text or "") for el in case
                    if el.tag in ("failure", "error")]
        outcomes[f"{case.get('classname')}.{case.get('name')}"] = problems
    leak = [problems for name, problems in outcomes.items() if name.startswith("test_zz_leak")]
    assert leak and leak[0], f"the leak went unnoticed:\n{result.stdout[-3000:]}"
    assert "Clients were not released" in leak[0][0] and "warehouse" in leak[0][0]
    failed = {
        f"{name} ({names.get(name.split('.')[0], '?')})": problems
        for name, problems in outcomes.items()
        if problems and not name.startswith("test_zz_leak")
    }
    assert not failed, f"{failed}\n{result.stdout[-3000:]}"
    assert len(outcomes) > len(blocks), result.stdout[-3000:]
