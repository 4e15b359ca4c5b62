"""``manage.py pool_status [ALIAS ...] [--json]``: this process's view of the pools."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import NoReverseMatch, reverse

from pooled_clients import conf
from pooled_clients.masking import printable
from pooled_clients.status_data import status_data

COLUMNS = (
    ("alias", "ALIAS"), ("state", "STATE"), ("size", "SIZE"), ("idle", "IDLE"),
    ("in_use", "IN USE"), ("waiting", "WAITING"), ("max_size", "MAX"),
    ("acquired_total", "ACQUIRED"), ("timeouts_total", "TIMEOUTS"), ("errors_total", "ERRORS"),
    ("target", "TARGET"),
)


class Command(BaseCommand):
    help = "Show the pools' stats as a table, or as JSON with --json."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("aliases", nargs="*", metavar="ALIAS",
                            help="Pools to show (default: all).")
        parser.add_argument("--json", action="store_true", help="Print JSON instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases: list[str] = options["aliases"]
        unknown = [a for a in aliases if a not in conf.pool_definitions()]
        if unknown:
            raise CommandError(f"Unknown pool alias(es): {', '.join(map(printable, unknown))}.",
                               returncode=2)
        # A one-off command is not a worker: it shows the others without publishing itself.
        data = status_data(publish_self=False)
        if aliases:
            data["pools"] = [p for p in data["pools"] if p["alias"] in aliases]
            if "misconfigured" in data:
                data["misconfigured"] = [p for p in data["misconfigured"]
                                         if p["alias"] in aliases]
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2, default=str))
            return
        self.stdout.write(f"host {printable(data['host'])} pid {data['pid']}")
        if data["pools"] or not data.get("misconfigured"):
            self.stdout.write(_table(data["pools"]))
        for pool in data["pools"]:
            if pool["last_error"]:
                self.stdout.write(f"{printable(pool['alias'])}: last error: "
                                  f"{printable(pool['last_error'])}")
        for bad in data.get("misconfigured", ()):
            if not aliases or bad["alias"] in aliases:
                self.stdout.write(self.style.ERROR(
                    f"{printable(bad['alias'])}: MISCONFIGURED, not built: "
                    f"{printable(bad['problem'])}"))
        if "workers" in data:
            self.stdout.write(f"\n{len(data['workers'])} worker(s) publishing:")
            if data.get("workers_error"):
                self.stdout.write(f"  {data['workers_error']}")
            for worker in data["workers"]:
                pools_text = ", ".join(
                    f"{printable(p['alias'])} {p['in_use']}/{p['size']}/{p['max_size']}"
                    for p in worker["pools"])
                self.stdout.write(f"  {printable(worker['host'])} pid {worker['pid']} "
                                  f"({worker['age']}s ago): {pools_text}")
            skipped = data.get("workers_skipped", 0)
            if skipped:
                self.stdout.write(f"  skipped {skipped} malformed entr"
                                  f"{'y' if skipped == 1 else 'ies'} of the shared status "
                                  "store (written by another version, or tampered with)")
        else:
            self.stdout.write(_own_process_note(data["pid"]))


def _own_process_note(pid: int) -> str:
    """Why the numbers may be zeros: this command sees its own pools, not the site's."""
    try:
        page = reverse("admin:pooled_clients_poolstatus_changelist")
    except NoReverseMatch:
        page = "/admin/pooled_clients/poolstatus/"
    return (
        f"\nNote: these are the pools of this command's own process (pid {pid}) only, not those "
        "of the processes serving your site.\nTo see those, set POOLED_CLIENTS_SHARED_STATUS "
        "(this command then lists every worker) or open the admin's Pool status page "
        f"({page})."
    )


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No pools are configured."
    cells = [[title for _, title in COLUMNS]]
    cells += [[printable(row.get(key, "")) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )
