"""The packaged default model, loaded for real."""
import re
import subprocess
import sys

import pytest

from inference import SamplingParams
from bench.stack import ROOT

pytestmark = pytest.mark.slow


def test_it_knows_the_capital_of_france(real_engine):
    stream = real_engine.stream_reply("What is the capital of France? Answer in one sentence.",
                                      SamplingParams(temperature=0, max_new_tokens=30))
    pieces = list(stream)
    assert "Paris" in "".join(pieces)
    assert len(pieces) > 3
    assert stream.finish_reason == "stop"


def test_the_readme_shell_lines_print_a_streamed_answer(default_model_dir):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## From `manage.py shell`\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(block.strip().splitlines()) <= 3
    result = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0"], input=block, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
