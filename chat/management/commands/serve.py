from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the site with daphne on CHAT_HOST:CHAT_PORT (validated settings)."

    def handle(self, *args, **options):
        self.stdout.write(f"Serving on http://{settings.CHAT_HOST}:{settings.CHAT_PORT}/")
        CommandLineInterface().run(
            ["-b", settings.CHAT_HOST, "-p", str(settings.CHAT_PORT), "--proxy-headers", "chatsite.asgi:application"]
        )
