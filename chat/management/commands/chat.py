import asyncio
import json
import signal
import sys

import websockets
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = ("Chat in the terminal through the running server's WebSocket (the browser's path). "
            "Type /new for a new conversation, /quit to leave; Ctrl-C stops a reply.")

    def add_arguments(self, parser):
        parser.add_argument("--url", default=f"ws://{settings.CHAT_HOST}:{settings.CHAT_PORT}/ws/chat/")
        parser.add_argument("--conversation", type=int, default=None, help="continue this conversation")
        parser.add_argument("--system", default=None, help="system prompt")
        parser.add_argument("--temperature", type=float, default=None)
        parser.add_argument("--max-new-tokens", type=int, default=None)

    def handle(self, *args, **options):
        params = {k: v for k, v in [("system", options["system"]), ("temperature", options["temperature"]),
                                    ("max_new_tokens", options["max_new_tokens"])] if v is not None}
        try:
            asyncio.run(self._chat(options["url"], options["conversation"], params))
        except (OSError, websockets.WebSocketException) as exc:
            raise CommandError(f"cannot reach the chat server at {options['url']}: {exc} (is `make run` serving?)")

    async def _chat(self, url, conversation, params):
        origin = url.replace("ws://", "http://").replace("wss://", "https://").split("/ws/")[0]
        async with websockets.connect(url, origin=origin) as socket:
            self.stdout.write("Connected. /new starts a new conversation, /quit leaves, Ctrl-C stops a reply.")
            while True:
                try:
                    line = await asyncio.to_thread(input, "\nyou> ")
                except EOFError:
                    return
                if line.strip() == "/quit":
                    return
                if line.strip() == "/new":
                    conversation = None
                    continue
                if not line.strip():
                    continue
                await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": line,
                                              "params": params}))
                conversation = await self._print_reply(socket, conversation)

    async def _print_reply(self, socket, conversation):
        loop = asyncio.get_running_loop()

        def stop():
            asyncio.ensure_future(socket.send(json.dumps({"type": "stop", "conversation": conversation})))

        loop.add_signal_handler(signal.SIGINT, stop)
        try:
            sys.stdout.write("bot> ")
            while True:
                frame = json.loads(await socket.recv())
                kind = frame["type"]
                if kind == "ack":
                    conversation = frame["conversation"]
                elif kind == "token":
                    sys.stdout.write(frame["text"])
                    sys.stdout.flush()
                elif kind == "queued":
                    sys.stdout.write(f"[queued, position {frame['position']}] ")
                elif kind == "error":
                    sys.stdout.write(f"\n[error {frame['code']}: {frame['detail']}]")
                    if frame["code"] not in ("no_worker",):
                        return conversation
                elif kind == "done":
                    usage = frame["usage"]
                    sys.stdout.write(f"\n[{frame['finish_reason']}, {usage['completion_tokens']} tokens]\n")
                    return conversation
        finally:
            loop.remove_signal_handler(signal.SIGINT)
