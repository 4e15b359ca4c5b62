"""Models: the admin "Pool status" entry (no table) and the optional shared-status table."""

from __future__ import annotations

from django.db import models


class PoolStatus(models.Model):
    """No table: gives the admin an entry and the ``view_pool_status`` permission."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_pool_status", "Can view pool status")]
        verbose_name = "pool status"
        verbose_name_plural = "pool status"

    def __str__(self) -> str:
        return "pool status"


class WorkerStatus(models.Model):
    """The last stats snapshot one process published (``POOLED_CLIENTS_SHARED_STATUS =
    "database"``); one row per host and pid, upserted every interval."""

    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    #: Wall-clock seconds (``time.time()``) of the last publication; readers age rows out.
    published_at = models.FloatField(db_index=True)
    payload = models.TextField()

    class Meta:
        default_permissions = ()
        verbose_name = "worker status"
        verbose_name_plural = "worker status"
        constraints = [
            models.UniqueConstraint(fields=["host", "pid"], name="pooled_clients_worker_host_pid"),
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"
