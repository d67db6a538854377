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


def test_greedy_replies_are_token_identical_alone_and_in_a_full_batch(real_engine):
    from tests.engine_support import engine_with, user

    prompts = ["What is the capital of France?", "Write a haiku about the sea.", "2+2?",
               "Explain what a Python list comprehension is."]
    greedy = SamplingParams(temperature=0, max_new_tokens=24)
    alone = []
    for prompt in prompts:
        stream = real_engine.stream_reply(user(prompt), greedy)
        stream.text()
        alone.append(stream.token_ids)
    full = engine_with(real_engine, max_batch_size=len(prompts))
    streams = [full.stream_reply(user(prompt), greedy) for prompt in prompts]
    for stream in streams:
        stream.text()
    assert [s.token_ids for s in streams] == alone
