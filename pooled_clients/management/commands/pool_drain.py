"""``manage.py pool_drain ALIAS [--all-workers] [--timeout S]``.

Replaces every client of pool ALIAS: after a credential rotation, a DNS failover or a
database switchover. Without ``--all-workers`` only this process's pool is drained. With it,
and with ``POOLED_CLIENTS_SHARED_STATUS`` on, every worker on every host drains at its next
publication (within one ``POOLED_CLIENTS_SHARED_STATUS_INTERVAL``) and confirms through the
shared store: the command prints each worker (host and pid) that confirmed and exits 1 if
some did not within ``--timeout``. Exit 2 for an unknown alias.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pooled_clients import conf, shared_status
from pooled_clients.handler import pools


def confirmations(alias: str, drain_id: str, expected: set[tuple[str, int]]
                  ) -> tuple[list[dict[str, Any]], set[tuple[str, int]]]:
    """The workers that applied ``drain_id`` of ``alias``, and those of ``expected`` that
    have not yet."""
    confirmed = [w for w in shared_status.read()
                 if (w.get("drains") or {}).get(alias, {}).get("id") == drain_id]
    return confirmed, expected - {(w["host"], w["pid"]) for w in confirmed}


def workers_with(alias: str) -> set[tuple[str, int]]:
    """(host, pid) of every live worker whose published pools include ``alias``."""
    return {(w["host"], w["pid"]) for w in shared_status.read()
            if any(p.get("alias") == alias for p in w.get("pools", ()))}


class Command(BaseCommand):
    help = "Replace every client of a pool, in this process or on every worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("alias", metavar="ALIAS", help="The pool to drain.")
        parser.add_argument("--all-workers", action="store_true",
                            help="Drain the pool on every worker of every host (needs "
                                 "POOLED_CLIENTS_SHARED_STATUS).")
        parser.add_argument("--timeout", type=float, default=None, metavar="S",
                            help="Seconds to wait for every worker to confirm (default: two "
                                 "publish intervals and 5 seconds).")

    def handle(self, *args: Any, **options: Any) -> None:
        alias: str = options["alias"]
        if alias not in conf.pool_definitions():
            known = ", ".join(repr(a) for a in conf.pool_definitions()) or "none"
            raise CommandError(f"No pool {alias!r} in settings.POOLED_CLIENTS (configured: "
                               f"{known}).", returncode=2)
        if not options["all_workers"] or not shared_status.enabled():
            pools.drain(alias)
        if not options["all_workers"]:
            self.stdout.write(f"Drained pool {alias!r} in this process only (host "
                              f"{shared_status.host()} pid {os.getpid()}); use --all-workers "
                              "to drain every worker.")
            return
        if not shared_status.enabled():
            raise CommandError(f"Drained pool {alias!r} in this process only: "
                               "POOLED_CLIENTS_SHARED_STATUS is off, so this command can reach "
                               "only its own process. Turn it on to drain every worker, or "
                               "restart the workers.", returncode=1)
        self._drain_fleet(alias, options["timeout"])

    def _drain_fleet(self, alias: str, timeout: float | None) -> None:
        interval = float(conf.get_process_setting("POOLED_CLIENTS_SHARED_STATUS_INTERVAL"))
        timeout = 2 * interval + 5.0 if timeout is None else max(0.0, timeout)
        expected = workers_with(alias)
        drain_id = shared_status.request_drain(alias)
        self.stdout.write(f"Drain {drain_id} of pool {alias!r} requested; waiting up to "
                          f"{timeout:g}s for {len(expected)} worker(s) to confirm.")
        deadline = time.monotonic() + timeout
        shown: set[tuple[str, int]] = set()
        while True:
            confirmed, missing = confirmations(alias, drain_id, expected)
            for worker in confirmed:
                key = (worker["host"], worker["pid"])
                if key not in shown:
                    shown.add(key)
                    self.stdout.write(f"  confirmed: host {key[0]} pid {key[1]}")
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if missing:
            for host, pid in sorted(missing):
                self.stderr.write(f"  no confirmation: host {host} pid {pid}")
            raise CommandError(f"{len(missing)} worker(s) did not confirm the drain within "
                               f"{timeout:g}s.", returncode=1)
        self.stdout.write(f"Every worker ({len(shown)}) drained pool {alias!r}.")
