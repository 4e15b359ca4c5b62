"""Exit the interpreter normally while another thread still holds a pooled client.

Run by tests/test_lifecycle.py as ``python -m tests.lifecycle_site.exitcheck``; prints the
wall-clock time at which the main thread finished, so the test can time the exit itself.
"""

from __future__ import annotations

import threading
import time

import django

django.setup()

from pooled_clients import pools  # noqa: E402


def hold_forever(ready: threading.Event) -> None:
    with pools["pg"].connection() as conn:
        conn.execute("select 1")
        ready.set()
        threading.Event().wait()  # never returns: the client is still in use at exit


def main() -> None:
    ready = threading.Event()
    threading.Thread(target=hold_forever, args=(ready,), daemon=True).start()
    assert ready.wait(10)
    with pools["pg"].connection() as conn:
        conn.execute("select 1")
    print(f"main done {time.time():.6f}", flush=True)


if __name__ == "__main__":
    main()
