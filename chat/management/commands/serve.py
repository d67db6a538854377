from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the site with daphne on CHAT_HOST:CHAT_PORT (validated settings)."

    def handle(self, *args, **options):
        self.stdout.write(f"Serving on http://{settings.CHAT_HOST}:{settings.CHAT_PORT}/")
        # The transport's hard cap sits above CHAT_MAX_FRAME_BYTES, so an oversized frame gets a
        # clear error frame from the consumer; only far larger ones are cut off (close code 1009).
        hard_cap = str(4 * settings.CHAT_MAX_FRAME_BYTES)
        CommandLineInterface().run([
            "-b", settings.CHAT_HOST, "-p", str(settings.CHAT_PORT),
            # No --proxy-headers: daphne would take X-Forwarded-For's leftmost entry, which the client
            # writes. chat.client_address reads the entry our proxy appended (CHAT_PROXY_HEADERS).
            "--websocket-max-message-size", hard_cap, "--websocket-max-frame-size", hard_cap,
            "chatsite.asgi:application",
        ])
