"""``pool_status`` says that it sees only its own process, and where the site's numbers are."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command


def _pool_status(*args: str) -> str:
    out = StringIO()
    call_command("pool_status", *args, stdout=out)
    return out.getvalue()


def test_pool_status_says_it_shows_its_own_process_and_points_to_shared_status(
        pooled_clients_settings: Callable[[str, dict[str, Any]], None]) -> None:
    pooled_clients_settings("payments", {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
                                         "OPTIONS": {"base_url": "http://127.0.0.1:9/"}})
    text = _pool_status()
    note = text[text.index("Note:"):]
    assert f"this command's own process (pid {os.getpid()}) only" in note
    assert "POOLED_CLIENTS_SHARED_STATUS" in note
    assert "Pool status page (/admin/pooled_clients/poolstatus/)" in note
    # The table comes first, untouched.
    assert text.splitlines()[1].startswith("ALIAS")


def test_pool_status_json_carries_no_note() -> None:
    data = json.loads(_pool_status("--json"))
    assert data["pid"] == os.getpid()


@pytest.mark.django_db
def test_pool_status_needs_no_note_when_it_lists_the_workers(settings: Any) -> None:
    settings.POOLED_CLIENTS_SHARED_STATUS = "database"
    text = _pool_status()
    assert "worker(s) publishing:" in text
    assert "Note:" not in text
