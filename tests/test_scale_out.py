"""Two web processes and two workers sharing one Redis and one database (SQLite, and PostgreSQL
where one answers), on loopback: turns spread over the workers, a stop reaches the worker
generating, and a killed worker loses no accepted request."""
import asyncio
import json
import re
import signal

import pytest
import websockets

from bench.stack import Stack, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path, tiny_model_dir, database):
    stack = Stack(tmp_path, redis_db=15, database=database, CHAT_MODEL=str(tiny_model_dir), CHAT_STALL_TIMEOUT=5,
                  CHAT_WORKER_HEARTBEAT=0.5, CHAT_MAX_BATCH_SIZE=2, CHAT_MESSAGES_PER_MINUTE=1000)
    stack.migrate()
    stack.start("web")
    second_port = free_port()
    stack.start("web", as_name="web2", CHAT_PORT=second_port)
    stack.start("worker")
    stack.start("worker", as_name="worker2")
    stack.wait_healthy()
    stack.second_ws_url = f"ws://127.0.0.1:{second_port}/ws/chat/"
    stack.second_base_url = f"http://127.0.0.1:{second_port}"
    yield stack
    stack.stop()


async def one_turn(url, origin, content, max_new_tokens=200):
    async with websockets.connect(url, origin=origin) as socket:
        await socket.send(json.dumps({"type": "send", "conversation": None, "content": content,
                                      "params": {"max_new_tokens": max_new_tokens, "temperature": 0}}))
        frames = []
        while True:
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 60)))
            if frames[-1]["type"] in ("done",) or (frames[-1]["type"] == "error" and frames[-1]["code"] != "no_worker"):
                return frames


def served_by(stack):
    return dict(stack.query("SELECT id, finish_reason FROM chat_message WHERE role='assistant'"))


def test_two_webs_and_two_workers_share_the_work_and_lose_nothing_when_a_worker_dies(cluster):
    async def drive():
        urls = [(cluster.ws_url, cluster.base_url), (cluster.second_ws_url, cluster.second_base_url)]
        tasks = [asyncio.create_task(one_turn(*urls[n % 2], f"request {n}")) for n in range(12)]
        while "turn taken" not in cluster.log("worker2"):  # mid-run: replies streaming there, others queued
            assert not all(task.done() for task in tasks), "every turn ended before the second worker took one"
            await asyncio.sleep(0.05)
        cluster.kill("worker2", signal.SIGKILL)
        return await asyncio.gather(*tasks)

    results = asyncio.run(drive())
    accepted = [frames for frames in results if frames[0]["type"] == "ack"]
    assert len(accepted) == 12, [f[0] for f in results if f[0]["type"] != "ack"]
    endings = [frames[-1] for frames in accepted]
    assert all(end["type"] == "done" for end in endings)  # every accepted request ended: a reply or an error
    reasons = [end["finish_reason"] for end in endings]
    assert reasons.count("length") >= 8, reasons  # the survivor served the dead worker's queued requests
    stored = served_by(cluster)
    assert all(stored[end["message"]] == end["finish_reason"] for end in endings)
    workers = {line.split("worker=")[1].split()[0] for name in ("worker", "worker2")
               for line in cluster.log(name).splitlines() if "turn taken" in line and "worker=" in line}
    assert len(workers) == 2, "both workers served turns"


def test_a_stop_sent_through_either_web_reaches_the_generating_worker(cluster):
    async def scenario():
        cookie_url = cluster.base_url + "/"
        import urllib.request

        with urllib.request.urlopen(cookie_url) as response:
            cookie = next(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") if c.startswith("sessionid="))
        headers = {"Cookie": cookie}
        async with websockets.connect(cluster.ws_url, origin=cluster.base_url, additional_headers=headers) as first, \
                websockets.connect(cluster.second_ws_url, origin=cluster.second_base_url,
                                   additional_headers=headers) as second:
            await first.send(json.dumps({"type": "send", "conversation": None, "content": "long",
                                         "params": {"max_new_tokens": 250}}))
            frames = []
            while not any(f["type"] == "token" for f in frames):
                frames.append(json.loads(await asyncio.wait_for(first.recv(), 60)))
            await second.send(json.dumps({"type": "stop", "conversation": frames[0]["conversation"]}))
            while frames[-1]["type"] != "done":
                frames.append(json.loads(await asyncio.wait_for(first.recv(), 60)))
            return frames[-1]

    done = asyncio.run(scenario())
    assert done["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] < 250


def test_a_turn_id_follows_each_turn_from_the_web_process_to_the_worker(cluster):
    asyncio.run(one_turn(cluster.ws_url, cluster.base_url, "trace me", max_new_tokens=4))
    queued = re.findall(r"turn queued reply=(\d+) .* turn=([0-9a-f]{12})", cluster.log("web"))
    assert queued, cluster.log("web")[-2000:]
    reply, turn = queued[-1]
    worker_logs = cluster.log("worker") + cluster.log("worker2")
    assert re.search(rf"turn taken reply={reply} worker=\S+ turn={turn}", worker_logs)
    assert re.search(rf"turn finished reply={reply} worker=\S+ finish_reason=length tokens=4 turn={turn}", worker_logs)


def test_json_logs_carry_the_turn_id(tmp_path, tiny_model_dir):
    stack = Stack(tmp_path, redis_db=15, CHAT_MODEL=str(tiny_model_dir), LOG_FORMAT="json")
    try:
        stack.start_all()
        asyncio.run(one_turn(stack.ws_url, stack.base_url, "trace me", max_new_tokens=3))
        records = [json.loads(line) for line in stack.log("worker").splitlines() if line.startswith("{")]
        finished = [r for r in records if r["message"].startswith("turn finished")]
        assert finished and len(finished[-1]["turn"]) == 12 and finished[-1]["completion_tokens"] == 3
    finally:
        stack.stop()
