"""Make sure a Redis answers at REDIS_URL; start (and if need be install) a local one if not."""
import os
import shutil
import subprocess
import sys
import time
from urllib.parse import urlparse

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def answers(url):
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


def main():
    if answers(URL):
        return 0
    parsed = urlparse(URL)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if host not in LOCAL_HOSTS:
        sys.exit(f"No Redis answers at {URL}, and it is not on this machine; start it or fix REDIS_URL.")
    if not shutil.which("redis-server"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            sys.exit("No Redis is running and redis-server is not installed; install it "
                     "(sudo apt-get install redis-server) or set REDIS_URL to a running Redis.")
        print("Installing redis-server (apt-get)...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True)
    print(f"Starting redis-server on {host}:{port}", flush=True)
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", host, "--port", str(port),
                    "--save", "", "--appendonly", "no"], check=True)
    for _ in range(50):
        if answers(URL):
            return 0
        time.sleep(0.1)
    sys.exit(f"Started redis-server but nothing answers at {URL}.")


if __name__ == "__main__":
    sys.exit(main())
