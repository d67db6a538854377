"""The real stack (web + worker from the Procfile, Redis, a database) on loopback, for tests.

The database is a SQLite file of the stack's own, or, with `database=<a PostgreSQL server URL>`,
a fresh PostgreSQL database created for the stack and dropped when it stops."""
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis_server(port, timeout=10):
    """A redis-server of our own on loopback at `port`, keeping nothing on disk; returned once it
    answers PING."""
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"redis-server did not answer on port {port}")


def procfile_commands():
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            commands[name.strip()] = command.strip()
    return commands


class Stack:
    """Starts each Procfile process as its own child (as honcho does), so tests can kill one."""

    def __init__(self, workdir, redis_db=10, database="sqlite", **env):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/chat/"
        self.db_path = Path(workdir) / "db.sqlite3"
        self.postgres = None if database == "sqlite" else PostgresDatabase(database, f"chat_stack_{self.port}")
        self.log_dir = Path(workdir)
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "CHAT_PORT": str(self.port),
            "DATABASE_URL": self.postgres.url if self.postgres else f"sqlite:///{self.db_path}",
            # The suite runs its own Redis server (tests/test_environment.py); the benchmarks use the local one.
            "REDIS_URL": f"{os.environ.get('CHAT_TEST_REDIS', 'redis://127.0.0.1:6379')}/{redis_db}",
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env.items()},
        }
        self.processes = {}
        self.commands = procfile_commands()

    def migrate(self):
        if self.postgres:
            self.postgres.create()
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=ROOT, env=self.env, check=True)
        import redis

        redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()

    def start(self, name, as_name=None, **env):
        """Start a Procfile process; `as_name` and `env` run another copy (a second web or worker)."""
        as_name = as_name or name
        log = open(self.log_dir / f"{as_name}.log", "ab")
        self.processes[as_name] = subprocess.Popen(
            shlex.split(self.commands[name]), cwd=ROOT, env={**self.env, **{k: str(v) for k, v in env.items()}},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self.processes[as_name]

    def kill(self, name, sig=signal.SIGKILL):
        process = self.processes.pop(name)
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def start_all(self, timeout=240):
        self.migrate()
        for name in self.commands:
            self.start(name)
        self.wait_healthy(timeout)
        return self

    def health(self):
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def wait_healthy(self, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == 200:
                return
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited: {self.log(name)[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"stack not healthy in {timeout} s: {self.log('worker')[-3000:]}")

    def log(self, name):
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def issue_api_key(self, username, **fields):
        """A new API key (the raw secret) for a user of the stack's database, created if needed;
        `fields` set the key's own (its limits: max_in_flight=2, say)."""
        code = ("from django.contrib.auth.models import User; from chat.models import ApiKey; "
                f"u, _ = User.objects.get_or_create(username={username!r}); k = ApiKey(name='test', user=u, **{fields!r}); "
                "raw = k.issue(); k.save(); print(raw)")
        result = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", code], cwd=ROOT,
                                env=self.env, capture_output=True, text=True, check=True)
        return result.stdout.strip().splitlines()[-1]

    def query(self, sql, *args):
        """Rows of one SQL statement on the stack's database (placeholders: %s)."""
        if self.postgres:
            return self.postgres.query(sql, *args)
        import sqlite3

        with sqlite3.connect(self.db_path) as db:
            return db.execute(sql.replace("%s", "?"), args).fetchall()

    def stop(self):
        for name in list(self.processes):
            try:
                self.kill(name, signal.SIGTERM)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.postgres:
            self.postgres.drop()


class PostgresDatabase:
    """A database of its own on a PostgreSQL server (`server` like postgres://user@host:port)."""

    def __init__(self, server, name):
        self.server, self.name = server.rstrip("/"), name
        self.url = f"{self.server}/{name}"

    def _admin(self, sql):
        import psycopg

        with psycopg.connect(f"{self.server}/postgres", autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql)

    def create(self):
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self):
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def set_reachable(self, reachable):
        """Refuse (or allow again) every connection to this database, and cut the open ones:
        for the stack's processes the database is down, the server and others' databases are not."""
        self._admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS {str(reachable).lower()}')
        if not reachable:
            self._admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'")

    def query(self, sql, *args):
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as connection:
            return connection.execute(sql, args).fetchall()


def postgres_server():
    """The PostgreSQL server the tests may use (CHAT_TEST_POSTGRES), or None when none answers."""
    server = os.environ.get("CHAT_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
    try:
        import psycopg

        psycopg.connect(f"{server}/postgres", connect_timeout=3).close()
    except Exception:
        return None
    return server
