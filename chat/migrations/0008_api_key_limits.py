import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0007_message_versions'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='max_in_flight',
            field=models.PositiveIntegerField(blank=True, help_text='Calls generating at once; blank: CHAT_API_KEY_MAX_IN_FLIGHT.', null=True, validators=[django.core.validators.MinValueValidator(1)]),
        ),
        migrations.AddField(
            model_name='apikey',
            name='requests_per_minute',
            field=models.PositiveIntegerField(blank=True, help_text='Calls per minute; blank: CHAT_API_KEY_REQUESTS_PER_MINUTE.', null=True, validators=[django.core.validators.MinValueValidator(1)]),
        ),
        migrations.AddField(
            model_name='apikey',
            name='tokens_per_minute',
            field=models.PositiveIntegerField(blank=True, help_text='Prompt + completion tokens of the calls that ended in the last minute; blank: CHAT_API_KEY_TOKENS_PER_MINUTE.', null=True, validators=[django.core.validators.MinValueValidator(1)]),
        ),
        migrations.AddField(
            model_name='conversation',
            name='api_key',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='conversations', to='chat.apikey'),
        ),
    ]
