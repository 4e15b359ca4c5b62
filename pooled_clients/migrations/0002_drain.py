from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pooled_clients", "0001_initial")]

    operations = [
        migrations.AlterModelOptions(
            name="poolstatus",
            options={
                "verbose_name": "pool status",
                "verbose_name_plural": "pool status",
                "permissions": [("view_pool_status", "Can view pool status"),
                                ("drain_pool", "Can drain a pool on every worker")],
                "managed": False,
                "default_permissions": (),
            },
        ),
        migrations.CreateModel(
            name="DrainRequest",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False,
                                        verbose_name="ID")),
                ("alias", models.CharField(max_length=255, unique=True)),
                ("drain_id", models.CharField(max_length=64)),
                ("requested_at", models.FloatField()),
            ],
            options={
                "verbose_name": "drain request",
                "verbose_name_plural": "drain requests",
                "default_permissions": (),
            },
        ),
    ]
