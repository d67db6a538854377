"""A short version of `python -m bench.soak`: 32 clients on the tiny model for 30 seconds."""
import pytest

from bench import soak

pytestmark = pytest.mark.slow


def test_32_clients_sending_stopping_and_dropping_lose_nothing(tmp_path, tiny_model_dir):
    counts, problems = soak.run(tmp_path, clients=32, seconds=30, model=str(tiny_model_dir))
    print(counts)
    assert problems == []
    assert counts["accepted"] >= 32
    assert counts["done:cancelled"] > 0 and counts["reconnects"] > 0
    # Replies finished whole as well as stopped ones. How many fit in 30 s is the machine's speed,
    # which bench.soak reports; the test checks that nothing was lost or hung (problems, above).
    assert counts["done:length"] + counts.get("done:stop", 0) > 0
