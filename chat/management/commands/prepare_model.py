import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference import DEFAULT_MODEL, EngineError
from inference.packaged_model import ensure_converted


class Command(BaseCommand):
    help = "Assemble, verify and convert the packaged default model into the cache (once)."

    def handle(self, *args, **options):
        if settings.CHAT_MODEL != DEFAULT_MODEL:
            self.stdout.write(f"CHAT_MODEL is {settings.CHAT_MODEL!r}; the worker loads it at start.")
            return
        started = time.monotonic()
        try:
            folder = ensure_converted(settings.CHAT_MODEL_CACHE)
        except EngineError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Default model ready in {folder} ({time.monotonic() - started:.1f} s).")
