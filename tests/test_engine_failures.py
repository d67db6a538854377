"""A failure in one reply fails that reply only; a dead engine thread is seen and restarted."""
import pytest
import torch

from inference import EngineError, InvalidParameters, SamplingParams
from inference import engine_loop
from inference.sampler import sample_batch
from tests.engine_support import KilledThread, engine_with, fail_sampling, user, wait_for


def read_until_failure(stream):
    pieces = []
    with pytest.raises(EngineError) as error:
        for piece in stream:
            pieces.append(piece)
    return pieces, str(error.value)


def test_a_seed_beyond_64_bits_is_refused_before_it_reaches_torch():
    for seed in (2**63, 2**64, -1):
        with pytest.raises(InvalidParameters, match="seed must be between 0 and 9223372036854775807"):
            SamplingParams.from_dict({"seed": seed})
    assert SamplingParams.from_dict({"seed": 2**63 - 1}).seed == 2**63 - 1


def test_a_vanishing_temperature_decodes_greedily_instead_of_dividing_into_nan(tiny_engine):
    greedy = tiny_engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=10))
    greedy.text()
    for temperature in (1e-300, 5e-324, 1e-4):
        stream = tiny_engine.stream_reply(user("hi"), SamplingParams(temperature=temperature, max_new_tokens=10))
        stream.text()
        assert (stream.token_ids, stream.finish_reason) == (greedy.token_ids, "length")
    tiny_top_p = tiny_engine.stream_reply(user("hi"), SamplingParams(temperature=1.0, top_p=5e-324, max_new_tokens=10))
    tiny_top_p.text()  # only the most likely token survives: greedy again
    assert tiny_top_p.token_ids == greedy.token_ids


def test_nan_logits_are_an_error_of_that_reply_not_a_random_token():
    logits = torch.randn(4, 10)
    logits[1] = float("nan")
    logits[3, 2] = float("inf")
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0), SamplingParams(temperature=0.7),
              SamplingParams(temperature=0.7)]
    _, valid = sample_batch(logits, params, [None] * 4)
    assert valid == [True, False, True, False]
    _, valid = sample_batch(logits[:2], params[2:], [None] * 2)
    assert valid == [True, False]


def test_a_row_that_fails_ends_only_its_reply_and_keeps_its_text(tiny_engine, monkeypatch):
    doomed_params = SamplingParams(temperature=1.0, max_new_tokens=40, seed=666)
    params = SamplingParams(temperature=0, max_new_tokens=30)
    alone = tiny_engine.stream_reply(user("hello"), params)
    alone.text()

    fail_sampling(monkeypatch, seed=666, after=5, message="forced failure of one row")
    engine = engine_with(tiny_engine, max_batch_size=4)
    doomed = engine.stream_reply(user("tell me a story"), doomed_params)
    healthy = engine.stream_reply(user("hello"), params)
    pieces, error = read_until_failure(doomed)
    assert "forced failure of one row" in error
    assert len(doomed.token_ids) == 5 and "".join(pieces)  # what it said before failing was streamed
    healthy.text()
    assert (healthy.token_ids, healthy.finish_reason) == (alone.token_ids, "length")
    wait_for(lambda: engine.loop.stats()["active"] == 0)  # both left the batch
    assert engine.loop.healthy()
    after = engine.stream_reply(user("hello"), params)
    after.text()
    assert after.token_ids == alone.token_ids


def test_a_reply_that_cannot_be_admitted_fails_alone(tiny_engine, monkeypatch):
    engine = engine_with(tiny_engine)
    real_generator = torch.Generator

    def generator_refusing_seed_13(*args, **kwargs):
        generator = real_generator(*args, **kwargs)
        manual_seed = generator.manual_seed

        class Refusing:
            def manual_seed(self, seed):
                if seed == 13:
                    raise ValueError("Overflow when unpacking long long")
                return manual_seed(seed)
        return Refusing()

    monkeypatch.setattr(engine_loop.torch, "Generator", generator_refusing_seed_13)
    refused = engine.stream_reply(user("hi"), SamplingParams(temperature=1.0, max_new_tokens=5, seed=13))
    fine = engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=5))
    _, error = read_until_failure(refused)
    assert "could not start" in error
    fine.text()
    assert fine.finish_reason == "length" and engine.loop.healthy()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_scheduler_thread_is_reported_and_a_restart_serves_again(tiny_engine, monkeypatch):
    engine = engine_with(tiny_engine)
    params = SamplingParams(temperature=0, max_new_tokens=8)
    first = engine.stream_reply(user("hi"), params)
    first.text()
    assert engine.loop.healthy()

    def killed(*_):
        raise KilledThread()

    monkeypatch.setattr(engine.loop, "_step", killed)
    victim = engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=50))
    _, error = read_until_failure(victim)  # ended at once, not left to its read timeout
    assert "engine failed" in error
    engine.loop._thread.join(timeout=10)
    assert not engine.loop.healthy()
    with pytest.raises(EngineError, match="restarting"):
        engine.stream_reply(user("hi"), params)

    monkeypatch.undo()
    assert engine.loop.restart() is True
    assert engine.loop.healthy() and engine.loop.restart() is False
    again = engine.stream_reply(user("hi"), params)
    again.text()
    assert (again.token_ids, again.finish_reason) == (first.token_ids, "length")
