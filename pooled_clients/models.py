"""Models: the admin "Pool status" entry (no table) and the optional shared-status table."""

from __future__ import annotations

from django.db import models


class PoolStatus(models.Model):
    """No table: gives the admin an entry and the ``view_pool_status`` permission."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_pool_status", "Can view pool status"),
                       ("drain_pool", "Can drain a pool on every worker")]
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


class DrainRequest(models.Model):
    """The last fleet-wide drain asked for one alias (``POOLED_CLIENTS_SHARED_STATUS =
    "database"``): every worker applies a drain id it has not applied yet."""

    alias = models.CharField(max_length=255, unique=True)
    drain_id = models.CharField(max_length=64)
    #: Wall-clock seconds of the request; a worker started later has nothing to drain.
    requested_at = models.FloatField()

    class Meta:
        default_permissions = ()
        verbose_name = "drain request"
        verbose_name_plural = "drain requests"

    def __str__(self) -> str:
        return f"{self.alias}:{self.drain_id}"
