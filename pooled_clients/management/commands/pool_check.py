"""``manage.py pool_check [ALIAS ...] [--timeout S] [--workers N]``.

Exit 0 when every named pool (all when none are named) yields a working client, 1 otherwise
(with the reason per pool), 2 for an unknown alias. For PostgreSQL pools it also reports the
server's ``max_connections`` and warns when MAX_SIZE x N workers would exceed it (a warning
alone keeps exit 0).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pooled_clients import conf
from pooled_clients.core import ClientPool
from pooled_clients.handler import pools
from pooled_clients.masking import mask_text, printable


class Command(BaseCommand):
    help = "Check that each pool can reach its service; exit 1 if one cannot."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("aliases", nargs="*", metavar="ALIAS",
                            help="Pools to check (default: all).")
        parser.add_argument("--timeout", type=float, default=None, metavar="S",
                            help="Seconds per pool (default: the pool's HEALTH TIMEOUT).")
        parser.add_argument("--workers", type=int, default=1, metavar="N",
                            help="Processes that will each open up to MAX_SIZE clients "
                                 "(for the PostgreSQL max_connections warning).")

    def handle(self, *args: Any, **options: Any) -> None:
        definitions = conf.pool_definitions()
        aliases: list[str] = options["aliases"] or list(definitions)
        unknown = [a for a in aliases if a not in definitions]
        if unknown:
            known = ", ".join(map(printable, definitions)) or "none"
            raise CommandError(f"Unknown pool alias(es): {', '.join(map(printable, unknown))} "
                               f"(configured: {known}).", returncode=2)
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1.", returncode=2)
        failed = [alias for alias in aliases
                  if not self._check(alias, definitions[alias], options)]
        if failed:
            raise CommandError(f"{len(failed)} of {len(aliases)} pool(s) failed: "
                               f"{', '.join(map(printable, failed))}.", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"{len(aliases)} pool(s) OK."))

    def _check(self, alias: str, definition: Any, options: dict[str, Any]) -> bool:
        try:
            parsed = conf.parse_definition(alias, definition)
            pool = pools[alias]
        except ImproperlyConfigured as exc:
            self.stdout.write(self.style.ERROR(
                f"{printable(alias)}: FAILED: misconfigured: {printable(mask_text(str(exc)))}"))
            return False
        timeout = options["timeout"] if options["timeout"] is not None else parsed.health_timeout
        start = time.monotonic()
        try:
            # The FAILED line below says why, once: the pool's own warnings would repeat it.
            with _quiet_pool_logs():
                pool.check(timeout=timeout)
        except Exception as exc:
            reason = printable(pool.mask(str(exc))) or type(exc).__name__
            self.stdout.write(self.style.ERROR(
                f"{printable(alias)}: FAILED ({printable(pool.target)}): "
                f"{type(exc).__name__}: {reason}"))
            return False
        elapsed_ms = (time.monotonic() - start) * 1000
        self.stdout.write(f"{printable(alias)}: OK ({printable(pool.target)}, "
                          f"{elapsed_ms:.0f} ms)")
        if _is_postgres(pool):
            self._report_max_connections(pool, timeout, options["workers"])
        return True

    def _report_max_connections(self, pool: ClientPool[Any], timeout: float, workers: int) -> None:
        try:
            with pool.connection(timeout=timeout) as conn:
                row = conn.execute("SHOW max_connections").fetchone()
            max_connections = int(row[0])
        except Exception as exc:
            self.stdout.write(self.style.WARNING(
                f"{printable(pool.alias)}: could not read max_connections: "
                f"{type(exc).__name__}"))
            return
        max_size = pool.stats().max_size
        needed = max_size * workers
        line = (f"{printable(pool.alias)}: server max_connections {max_connections}; "
                f"MAX_SIZE {max_size} x {workers} worker(s) = {needed}")
        if needed > max_connections:
            self.stdout.write(self.style.WARNING(
                f"WARNING {line} exceeds it: lower MAX_SIZE, use fewer workers, or put "
                "PgBouncer in front."))
        else:
            self.stdout.write(line)


@contextlib.contextmanager
def _quiet_pool_logs() -> Iterator[None]:
    logger = logging.getLogger("pooled_clients")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def _is_postgres(pool: ClientPool[Any]) -> bool:
    # A PostgreSQL pool has imported its backend module; nothing else needs to import psycopg.
    module = sys.modules.get("pooled_clients.backends.postgres")
    backend = getattr(pool, "backend", None)
    return module is not None and isinstance(backend, module.PostgresBackend)
