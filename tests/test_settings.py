import subprocess
import sys

import pytest

from bench.stack import ROOT


def manage(*args, **env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **env}, timeout=60)


@pytest.mark.parametrize("name, value, says", [
    ("CHAT_PORT", "abc", "CHAT_PORT"),
    ("CHAT_PORT", "70000", "CHAT_PORT: 70000 is not a TCP port"),
    ("DEBUG", "perhaps", "DEBUG"),
    ("CHAT_STALL_TIMEOUT", "-1", "CHAT_STALL_TIMEOUT: must be greater than 0"),
    ("CHAT_DTYPE", "int4", "CHAT_DTYPE"),
    ("CHAT_QUANTIZE", "int3", "CHAT_QUANTIZE"),
    ("DATABASE_URL", "nonsense://x", "DATABASE_URL"),
])
def test_a_bad_value_stops_start_up_naming_the_variable(name, value, says):
    result = manage("check", **{name: value})
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in last_line and says in last_line


def test_no_configuration_at_all_is_a_working_configuration():
    result = manage("check")
    assert result.returncode == 0, result.stderr
    result = manage("shell", "-v", "0", "-c", "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
                    "s.REDIS_URL, s.CHAT_MODEL, s.CHAT_DEVICE, s.CHAT_PORT)")
    assert result.stdout.split() == ["django.db.backends.sqlite3", "redis://127.0.0.1:6379/0", "default", "auto", "8000"]
