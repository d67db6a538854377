"""Load and soak: many WebSocket clients for a while against the running stack, on loopback only.

    python -m bench.soak [--clients 32] [--seconds 180] [--model default|PATH]

Each client holds a conversation: it sends turns, sometimes stops a reply, sometimes drops the
connection mid-stream and reconnects (the reply carries on in the worker). Afterwards it checks
that every accepted user message and every finished reply is in the database exactly once, that
no socket hung, and that the worker's memory did not grow without bound; it prints the counts.
"""
import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import websockets

from .stack import Stack

RECV_TIMEOUT = 120  # a socket that says nothing for this long counts as hung


async def client(stack, number, until, counts, accepted, finished, rng):
    with urllib.request.urlopen(stack.base_url + "/") as response:
        cookie = next(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") if c.startswith("sessionid="))
    conversation, turn = None, 0
    while time.monotonic() < until:
        async with websockets.connect(stack.ws_url, origin=stack.base_url,
                                      additional_headers={"Cookie": cookie}) as socket:
            while time.monotonic() < until:
                turn += 1
                content = f"client {number} turn {turn}: tell me something about the number {turn}."
                await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": content,
                                              "params": {"max_new_tokens": rng.choice([8, 16, 32])}}))
                action = rng.choices(["finish", "stop", "drop"], weights=[7, 2, 1])[0]
                outcome = await run_turn(socket, action, counts, accepted, finished, content)
                conversation = outcome.get("conversation", conversation)
                if outcome.get("dropped"):
                    counts["reconnects"] += 1
                    break  # reconnect with the same session
                if outcome.get("busy"):
                    await asyncio.sleep(0.5)


async def run_turn(socket, action, counts, accepted, finished, content):
    """Follow one turn to its end; frames of earlier replies (after a reconnect) are recorded too."""
    outcome, tokens, reply = {}, 0, None
    while True:
        try:
            frame = json.loads(await asyncio.wait_for(socket.recv(), RECV_TIMEOUT))
        except TimeoutError:
            counts["hung_sockets"] += 1
            outcome["dropped"] = True
            return outcome
        kind = frame["type"]
        if kind == "ack":
            accepted[frame["message"]] = content
            reply = frame["reply"]
            outcome["conversation"] = frame["conversation"]
            counts["accepted"] += 1
        elif kind == "error":
            counts[f"error:{frame['code']}"] += 1
            if frame["code"] == "no_worker":
                continue
            outcome["busy"] = frame["code"] in ("busy", "rate_limited")
            return outcome
        elif kind == "token" and frame["message"] == reply:
            tokens += 1
            if tokens == 1 and action == "stop":
                await socket.send(json.dumps({"type": "stop", "conversation": frame["conversation"]}))
            if tokens == 1 and action == "drop":
                outcome["dropped"] = True
                return outcome
        elif kind == "done":
            finished[frame["message"]] = (frame["finish_reason"], frame["usage"]["completion_tokens"])
            counts[f"done:{frame['finish_reason']}"] += 1
            if frame["message"] == reply:
                return outcome


def worker_rss_kb(stack):
    status = Path(f"/proc/{stack.processes['worker'].pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def check(stack, accepted, finished, counts, rss):
    """The invariants; returns a list of problems (empty when all hold)."""
    problems = []
    deadline = time.monotonic() + 120
    with sqlite3.connect(stack.db_path) as db:
        while db.execute("SELECT count(*) FROM chat_message WHERE role='assistant' AND finish_reason=''").fetchone()[0]:
            if time.monotonic() > deadline:
                problems.append("replies still generating two minutes after the clients stopped")
                break
            time.sleep(1)
        for message_id, content in accepted.items():
            stored = db.execute("SELECT count(*) FROM chat_message WHERE content = ? AND role = 'user'",
                                (content,)).fetchone()[0]
            if stored != 1 or not db.execute("SELECT 1 FROM chat_message WHERE id = ?", (message_id,)).fetchone():
                problems.append(f"user message {message_id} stored {stored} times")
        for reply_id, (reason, _) in finished.items():
            row = db.execute("SELECT finish_reason FROM chat_message WHERE id = ?", (reply_id,)).fetchone()
            if row is None or row[0] != reason:
                problems.append(f"reply {reply_id} finished as {reason} but is stored as {row}")
        counts["stored_messages"] = db.execute("SELECT count(*) FROM chat_message").fetchone()[0]
    if counts["hung_sockets"]:
        problems.append(f"{counts['hung_sockets']} sockets hung")
    growth_mb = (rss[-1] - rss[0]) / 1024
    counts["worker_rss_growth_mb"] = round(growth_mb, 1)
    if growth_mb > 500:
        problems.append(f"the worker's memory grew by {growth_mb:.0f} MB")
    return problems


async def soak(stack, clients, seconds, seed=0):
    counts, accepted, finished, rss = Counter(), {}, {}, [worker_rss_kb(stack)]
    until = time.monotonic() + seconds
    rng = random.Random(seed)

    async def sample_memory():
        while time.monotonic() < until:
            await asyncio.sleep(5)
            rss.append(worker_rss_kb(stack))

    await asyncio.gather(sample_memory(), *[client(stack, n, until, counts, accepted, finished,
                                                   random.Random(rng.random())) for n in range(clients)])
    rss.append(worker_rss_kb(stack))
    return counts, accepted, finished, rss


def run(workdir, clients, seconds, model="default"):
    stack = Stack(workdir, redis_db=14, CHAT_MODEL=model, CHAT_MESSAGES_PER_MINUTE=1000, CHAT_STALL_TIMEOUT=30)
    stack.start_all()
    try:
        counts, accepted, finished, rss = asyncio.run(soak(stack, clients, seconds))
        problems = check(stack, accepted, finished, counts, rss)
    finally:
        stack.stop()
    counts["clients"], counts["seconds"] = clients, seconds
    return dict(sorted(counts.items())), problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        counts, problems = run(workdir, args.clients, args.seconds, args.model)
    for key, value in counts.items():
        print(f"{key:>24}: {value}")
    print("\n".join(problems) if problems else "all invariants hold")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
