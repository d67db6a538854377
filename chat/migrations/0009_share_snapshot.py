from django.db import migrations, models


def snapshot_live_links(apps, schema_editor):
    """Links made before snapshots keep showing what they showed on the day of this migration."""
    ShareLink, Message = apps.get_model("chat", "ShareLink"), apps.get_model("chat", "Message")
    for link in ShareLink.objects.filter(revoked_at__isnull=True):
        rows = (Message.objects.filter(conversation_id=link.conversation_id, superseded=False)
                .exclude(role="assistant", finish_reason="").order_by("id").values_list("id", "content"))
        link.snapshot = [[pk, len(content)] for pk, content in rows]
        link.save(update_fields=["snapshot"])


class Migration(migrations.Migration):
    dependencies = [("chat", "0008_api_key_limits")]

    operations = [
        migrations.AddField(model_name="sharelink", name="snapshot",
                            field=models.JSONField(blank=True, default=list)),
        migrations.RunPython(snapshot_live_links, migrations.RunPython.noop),
    ]
