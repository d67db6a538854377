import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from inference import EngineError

from ...engines import load_engine_from_settings
from ...worker import InferenceWorker


class Command(BaseCommand):
    help = ("Load the model once (or connect to an upstream OpenAI-compatible server) and serve generation "
            "requests from the shared queue until stopped.")

    def add_arguments(self, parser):
        parser.add_argument("--upstream", metavar="URL", default=None,
                            help="stream replies from this OpenAI-compatible server (e.g. http://gpu-box:8000/v1) "
                                 "instead of loading a model; overrides CHAT_UPSTREAM_URL")

    def handle(self, *args, **options):
        try:
            engine = load_engine_from_settings(options["upstream"])
        except EngineError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Loaded {engine!r}; serving requests.")
        asyncio.run(self._serve(engine))

    async def _serve(self, engine):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await InferenceWorker(engine).run(stop)
