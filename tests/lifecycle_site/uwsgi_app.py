"""The lifecycle site for uWSGI: loaded once in the master, which then forks its workers.

With ``LIFECYCLE_WARM_MASTER=1`` the master uses the pool before the fork (MIN_SIZE filled)
and records its sessions in ``master-ready.json``, so a test can tell the workers' sessions
from the master's.
"""

import json
import os
import time
from pathlib import Path

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.lifecycle_site.settings")
application = get_wsgi_application()

if os.environ.get("LIFECYCLE_WARM_MASTER") == "1":
    from pooled_clients import pools

    pool = pools["pg"]
    with pool.connection() as conn:
        conn.execute("select 1")
    deadline = time.monotonic() + 10
    while pool.stats().idle < pool.stats().min_size and time.monotonic() < deadline:
        time.sleep(0.02)
    backend_pids = []
    clients = [pool.acquire() for _ in range(pool.stats().idle)]
    for client in clients:
        backend_pids.append(client.info.backend_pid)
    for client in clients:
        pool.release(client)
    state = Path(os.environ["LIFECYCLE_STATE_DIR"]) / "master-ready.json"
    state.write_text(json.dumps({"pid": os.getpid(), "backend_pids": backend_pids}))
