"""Loaded as a pytest plugin (-p) before Django reads its settings.

Each run of the suite gets a Redis server of its own on a free port (the system's `redis-server`),
so two runs on one machine, or a run beside `make run`, never share or flush each other's data.
Tests that start the stack use numbered databases of that server (bench.stack.Stack).
"""
import atexit
import os
import shutil
import socket
import subprocess
import time
import warnings

os.environ.setdefault("CHAT_REQUEST_TIMEOUT", "5")
os.environ.setdefault("CHAT_STALL_TIMEOUT", "5")
os.environ.setdefault("CHAT_WORKER_HEARTBEAT", "0.5")
# Every test client comes from 127.0.0.1: the per-address guest limits are tested on their own.
os.environ.setdefault("CHAT_GUESTS_PER_ADDRESS", "100000")
os.environ.setdefault("CHAT_GUEST_TURNS_PER_ADDRESS", "100000")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_private_redis():
    port = _free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(server.terminate)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the suite's own redis-server did not answer on port {port}")


if "CHAT_TEST_REDIS" not in os.environ:
    if shutil.which("redis-server"):
        os.environ["CHAT_TEST_REDIS"] = _start_private_redis()
    else:
        warnings.warn("redis-server is not installed: the tests share the Redis at 127.0.0.1:6379 "
                      "(databases 9-15), so two runs at once would interfere")
        os.environ["CHAT_TEST_REDIS"] = "redis://127.0.0.1:6379"
os.environ.setdefault("REDIS_URL", os.environ["CHAT_TEST_REDIS"] + "/9")
