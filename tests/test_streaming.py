import threading

import pytest

from inference import EngineError, SamplingParams
from tests.engine_support import user


def test_it_streams_several_pieces_and_reports_length(tiny_engine):
    stream = tiny_engine.stream_reply(user("hello"), SamplingParams(temperature=0, max_new_tokens=12))
    pieces = list(stream)
    assert len(pieces) >= 3
    assert stream.finish_reason == "length"
    assert stream.completion_tokens == 12
    assert stream.prompt_tokens > 5


def test_greedy_is_deterministic_and_a_seed_makes_sampling_repeatable(tiny_engine):
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    assert tiny_engine.reply(user("hi"), greedy) == tiny_engine.reply(user("hi"), greedy)
    seeded = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8, seed=7)
    assert tiny_engine.reply(user("hi"), seeded) == tiny_engine.reply(user("hi"), seeded)
    other_seed = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8, seed=8)
    assert tiny_engine.reply(user("hi"), seeded) != tiny_engine.reply(user("hi"), other_seed)


def test_it_stops_at_an_end_of_turn_token(tiny_engine, monkeypatch):
    assert tiny_engine.tokenizer.convert_tokens_to_ids("<|im_end|>") in tiny_engine.stop_token_ids
    seeded = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=30, seed=3)
    probe = tiny_engine.stream_reply(user("hi"), seeded)
    probe.text()
    # Make a token this random model picks later an end-of-turn token, as a trained model's would be.
    k = next(i for i, t in enumerate(probe.token_ids) if i > 0 and t not in probe.token_ids[:i])
    monkeypatch.setattr(tiny_engine.loop, "stop_token_ids", tiny_engine.stop_token_ids | {probe.token_ids[k]})
    stream = tiny_engine.stream_reply(user("hi"), seeded)
    text = stream.text()
    assert stream.finish_reason == "stop"
    assert stream.token_ids == probe.token_ids[:k]
    assert stream.completion_tokens == k
    assert text == tiny_engine.tokenizer.decode(probe.token_ids[:k])


def test_it_can_be_cancelled_from_another_thread(tiny_engine):
    stream = tiny_engine.stream_reply(user("count"), SamplingParams(temperature=0, max_new_tokens=200))
    seen = []
    for piece in stream:
        seen.append(piece)
        if len(seen) == 3:
            threading.Thread(target=stream.cancel).start()
            threading.Event().wait(0.05)
    assert stream.finish_reason == "cancelled"
    assert 3 <= stream.completion_tokens < 200


def test_it_accepts_params_as_a_dict_and_validates_them(tiny_engine):
    stream = tiny_engine.stream_reply(user("x"), {"max_new_tokens": 2, "temperature": 0})
    text = stream.text()
    assert (stream.completion_tokens, stream.finish_reason) == (2, "length")
    assert text == tiny_engine.tokenizer.decode(stream.token_ids) and len(stream.token_ids) == 2
    with pytest.raises(EngineError, match="top_p"):
        tiny_engine.stream_reply(user("x"), {"top_p": 7})
