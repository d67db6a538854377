"""Loaded as a pytest plugin (-p) before Django reads its settings.

Each run of the suite gets a Redis server of its own on a free port (the system's `redis-server`),
so two runs on one machine, or a run beside `make run`, never share or flush each other's data.
Tests that start the stack use numbered databases of that server (bench.stack.Stack).
"""
import atexit
import os
import shutil
import warnings

from bench.stack import free_port, start_redis_server

os.environ.setdefault("CHAT_REQUEST_TIMEOUT", "5")
os.environ.setdefault("CHAT_STALL_TIMEOUT", "5")
os.environ.setdefault("CHAT_WORKER_HEARTBEAT", "0.5")
# Every test client comes from 127.0.0.1: the per-address guest limits are tested on their own.
os.environ.setdefault("CHAT_GUESTS_PER_ADDRESS", "100000")
os.environ.setdefault("CHAT_GUEST_TURNS_PER_ADDRESS", "100000")


if "CHAT_TEST_REDIS" not in os.environ:
    if shutil.which("redis-server"):
        port = free_port()
        atexit.register(start_redis_server(port).terminate)
        os.environ["CHAT_TEST_REDIS"] = f"redis://127.0.0.1:{port}"
    else:
        warnings.warn("redis-server is not installed: the tests share the Redis at 127.0.0.1:6379 "
                      "(databases 9-15), so two runs at once would interfere")
        os.environ["CHAT_TEST_REDIS"] = "redis://127.0.0.1:6379"
os.environ.setdefault("REDIS_URL", os.environ["CHAT_TEST_REDIS"] + "/9")
