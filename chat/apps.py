from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from . import signals  # noqa: F401
        from .search import ensure_index, register_functions

        post_migrate.connect(ensure_index, sender=self)
        connection_created.connect(register_functions)
