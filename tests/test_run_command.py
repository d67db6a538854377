"""`make run` (supervisord.conf) outlives a dead worker: it is restarted while the web process keeps serving."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from bench.stack import ROOT, Stack

pytestmark = pytest.mark.slow


def worker_pids(stack):
    """Process ids of the workers that announce themselves (their id is host-pid-suffix)."""
    try:
        body = json.loads(urllib.request.urlopen(stack.base_url + "/status", timeout=5).read())
    except OSError:
        return []
    return [int(w["id"].rsplit("-", 2)[1]) for w in body["workers"]]


class HealthWatch(threading.Thread):
    """Asks /healthz every 0.1 s and records every answer; None means the web process did not answer."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack, self.answers, self.running = stack, [], True

    def run(self):
        while self.running:
            self.answers.append(self.stack.health())
            time.sleep(0.1)


@pytest.fixture
def supervised(tmp_path, tiny_model_dir):
    stack = Stack(tmp_path, redis_db=12, CHAT_MODEL=str(tiny_model_dir), CHAT_STALL_TIMEOUT=4,
                  CHAT_WORKER_HEARTBEAT=0.5)
    stack.migrate()
    log = open(tmp_path / "supervisord.log", "ab")
    supervisord = subprocess.Popen(
        [str(Path(sys.executable).parent / "supervisord"), "-c", str(ROOT / "supervisord.conf"),
         "--pidfile", str(tmp_path / "supervisord.pid")],
        cwd=tmp_path, env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.supervisord_log = lambda: (tmp_path / "supervisord.log").read_text(errors="replace")
    try:
        stack.wait_healthy(120)
        yield stack
    finally:
        supervisord.send_signal(signal.SIGTERM)
        supervisord.wait(timeout=60)


def test_a_killed_worker_is_restarted_and_the_web_process_never_stops(supervised):
    stack = supervised
    [pid] = worker_pids(stack)
    watch = HealthWatch(stack)

    async def scenario():
        async with websockets.connect(stack.ws_url, origin=stack.base_url) as socket:
            await socket.send(json.dumps({"type": "send", "conversation": None, "content": "A long story, please.",
                                          "params": {"max_new_tokens": 400, "temperature": 0}}))
            frames = []
            while sum(f["type"] == "token" for f in frames) < 2:
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 60)))
            watch.start()
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while frames[-1]["type"] != "done":  # the reply in flight ends as an error, its text kept
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 30)))
            while not (pids := worker_pids(stack)) or pids == [pid] or stack.health() != 200:
                assert time.monotonic() - killed_at < 60, stack.supervisord_log()[-3000:]
                await asyncio.sleep(0.2)
            # The same socket, never closed, carries a new turn to the restarted worker.
            await socket.send(json.dumps({"type": "send", "conversation": frames[0]["conversation"],
                                          "content": "Still there?", "params": {"max_new_tokens": 6}}))
            after = []
            while not after or after[-1]["type"] != "done":
                after.append(json.loads(await asyncio.wait_for(socket.recv(), 60)))
            return frames, after, pids

    try:
        frames, after, pids = asyncio.run(scenario())
    finally:
        watch.running = False
        watch.join()
    assert frames[-1]["finish_reason"] == "error"
    assert after[-1]["finish_reason"] == "length"
    assert len(pids) == 1 and pids[0] != pid
    assert None not in watch.answers, "the web process stopped answering"
    assert 503 in watch.answers and watch.answers[-1] == 200  # no worker for a while, then one again
    log = stack.supervisord_log()
    assert "exited: worker (terminated by SIGKILL" in log and "exited: web" not in log
