from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    operations = [
        migrations.CreateModel(
            name="PoolStatus",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False,
                                        verbose_name="ID")),
            ],
            options={
                "verbose_name": "pool status",
                "verbose_name_plural": "pool status",
                "permissions": [("view_pool_status", "Can view pool status")],
                "managed": False,
                "default_permissions": (),
            },
        ),
        migrations.CreateModel(
            name="WorkerStatus",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False,
                                        verbose_name="ID")),
                ("host", models.CharField(max_length=255)),
                ("pid", models.IntegerField()),
                ("published_at", models.FloatField(db_index=True)),
                ("payload", models.TextField()),
            ],
            options={
                "verbose_name": "worker status",
                "verbose_name_plural": "worker status",
                "default_permissions": (),
                "constraints": [
                    models.UniqueConstraint(fields=("host", "pid"),
                                            name="pooled_clients_worker_host_pid"),
                ],
            },
        ),
    ]
