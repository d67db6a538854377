from django.db import migrations, models
import django.db.models.deletion


def link_branches(apps, schema_editor):
    """Messages stored before versions existed get parents: an active message follows the previous
    active one; a superseded message follows the message stored just before it (a regenerated reply
    its user message, an edited-away message the reply it answered)."""
    Message = apps.get_model("chat", "Message")
    previous_active, previous_any, updates = {}, {}, []
    for message in Message.objects.order_by("id").only("id", "conversation_id", "superseded"):
        conversation = message.conversation_id
        if message.superseded:
            message.parent_id = previous_any.get(conversation)
        else:
            message.parent_id = previous_active.get(conversation)
            previous_active[conversation] = message.pk
        previous_any[conversation] = message.pk
        if message.parent_id is not None:
            updates.append(message)
    Message.objects.bulk_update(updates, ["parent"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [("chat", "0006_presets_and_attachments")]

    operations = [
        migrations.AddField(
            model_name="conversation", name="title_edited",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddField(
            model_name="message", name="parent",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="+", to="chat.message"),
        ),
        migrations.RunPython(link_branches, migrations.RunPython.noop),
    ]
