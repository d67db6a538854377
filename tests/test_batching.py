"""Continuous batching in the engine, on the tiny real model."""
import time
from unittest.mock import patch

import pytest

from inference import Engine, EngineConfig, EngineError, SamplingParams
from tests.chat_support import PacedModel
from tests.engine_support import engine_with, user, wait_for

PROMPTS = ["hello", "tell me a long story about a dragon and a knight", "2+2?", "write code"]


def test_replies_decoded_together_match_replies_decoded_alone(tiny_engine):
    greedy = SamplingParams(temperature=0, max_new_tokens=16)
    alone = []
    for prompt in PROMPTS:
        stream = tiny_engine.stream_reply(user(prompt), greedy)
        stream.text()
        alone.append(stream.token_ids)
    engine = engine_with(tiny_engine, max_batch_size=8)
    streams = [engine.stream_reply(user(prompt), greedy) for prompt in PROMPTS]
    for stream in streams:
        stream.text()
    assert [s.token_ids for s in streams] == alone
    assert all(s.finish_reason == "length" for s in streams)


def test_a_reply_joins_a_running_batch_and_leaves_it_when_done(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=4)
    long_one = engine.stream_reply(user(PROMPTS[1]), SamplingParams(temperature=0, max_new_tokens=120))
    wait_for(lambda: long_one.completion_tokens >= 10)
    short_one = engine.stream_reply(user(PROMPTS[0]), SamplingParams(temperature=0, max_new_tokens=5))
    short_one.text()
    assert short_one.finish_reason == "length"
    assert long_one.finish_reason is None and long_one.completion_tokens < 120  # still going
    long_one.text()
    alone = tiny_engine.stream_reply(user(PROMPTS[1]), SamplingParams(temperature=0, max_new_tokens=120))
    alone.text()
    assert long_one.token_ids == alone.token_ids
    assert engine.loop.stats()["active"] == 0


def test_each_reply_keeps_its_own_sampling_parameters(tiny_engine):
    engine = engine_with(tiny_engine)
    seeded = SamplingParams(temperature=1.0, top_p=0.8, max_new_tokens=12, seed=5)
    alone = tiny_engine.stream_reply(user("hi"), seeded)
    alone.text()
    streams = [engine.stream_reply(user("hi"), seeded),
               engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=3))]
    for stream in streams:
        stream.text()
    assert streams[0].token_ids == alone.token_ids
    assert streams[1].completion_tokens == 3


def test_replies_beyond_the_batch_size_wait_in_line_first_come_first_served(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=2)
    params = SamplingParams(temperature=0, max_new_tokens=40)
    streams = [engine.stream_reply(user(p), params) for p in PROMPTS]
    wait_for(lambda: streams[0].completion_tokens > 0)
    assert [s.queue_position for s in streams] == [0, 0, 1, 2]
    first_tokens = {}
    wait_for(lambda: all(s.completion_tokens for s in streams) or first_tokens.update(
        {i: time.monotonic() for i, s in enumerate(streams) if s.completion_tokens and i not in first_tokens}))
    for stream in streams:
        stream.text()
    assert first_tokens.get(2, 0) <= first_tokens.get(3, float("inf"))
    assert streams[3].queue_position == 0


def test_the_kv_cache_budget_holds_replies_back_and_refuses_impossible_ones(tiny_engine):
    prompt_tokens = tiny_engine.stream_reply(user("hello"), SamplingParams(max_new_tokens=1))
    prompt_tokens.text()
    budget = prompt_tokens.prompt_tokens + 30
    engine = engine_with(tiny_engine, max_batch_size=8, max_cache_tokens=budget)
    first = engine.stream_reply(user("hello"), SamplingParams(temperature=0, max_new_tokens=30))
    second = engine.stream_reply(user("hello"), SamplingParams(temperature=0, max_new_tokens=30))
    wait_for(lambda: first.completion_tokens > 0)
    assert second.queue_position == 1
    first.text()
    second.text()
    assert second.finish_reason == "length"
    with pytest.raises(EngineError, match="KV cache"):
        engine.stream_reply(user("hello"), SamplingParams(max_new_tokens=31))


def test_cancelling_frees_the_place_at_once_and_the_others_go_on(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=1)
    params = SamplingParams(temperature=0, max_new_tokens=200)
    running, waiting, behind = (engine.stream_reply(user(p), params) for p in PROMPTS[:3])
    wait_for(lambda: running.completion_tokens > 3)
    waiting.cancel()
    assert waiting.text() == "" and waiting.finish_reason == "cancelled" and waiting.completion_tokens == 0
    running.cancel()
    running.text()
    assert running.finish_reason == "cancelled" and running.completion_tokens < 200
    behind.text()
    assert behind.finish_reason == "length"


def test_a_long_prompt_is_read_in_chunks_while_the_batch_keeps_streaming(tiny_engine):
    engine = engine_with(tiny_engine, prefill_chunk_tokens=16)
    running = engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=300))
    wait_for(lambda: running.completion_tokens > 0)
    long_prompt = user("word " * 150)
    before = running.completion_tokens
    newcomer = engine.stream_reply(long_prompt, SamplingParams(temperature=0, max_new_tokens=2))
    chunks = -(-newcomer.prompt_tokens // 16)
    wait_for(lambda: newcomer.completion_tokens > 0)
    assert running.completion_tokens - before >= chunks - 1  # a token for the others after every chunk
    newcomer.text()
    running.cancel()
    running.text()


def test_replies_arriving_together_share_every_forward_pass(tiny_engine):
    model = PacedModel(tiny_engine.model)
    engine = Engine(model, tiny_engine.tokenizer, EngineConfig(max_batch_size=8), name="tiny")
    forwards = []
    real_call = PacedModel.__call__
    model.stalled.set()  # the first forward waits until the other three replies are in
    params = SamplingParams(temperature=0, max_new_tokens=8)
    with patch.object(PacedModel, "__call__", lambda self, **kw: forwards.append(kw["input_ids"].shape[1])
                      or real_call(self, **kw)):
        streams = [engine.stream_reply(user(PROMPTS[0]), params)]
        wait_for(lambda: forwards)  # the first forward (its prompt alone) has started
        streams += [engine.stream_reply(user(p), params) for p in PROMPTS[1:]]
        model.stalled.clear()
        for stream in streams:
            stream.text()
    # the next forward reads the other three prompts together and decodes the first reply; from
    # then on each forward decodes every reply: 8 tokens each in 9 forwards, not one prompt per round
    assert len(forwards) == 9, forwards
    # (each reads what the cache does not already hold: the template's system prompt is shared)
    assert forwards[1] == 1 + sum(s.prompt_tokens - s.cached_tokens for s in streams[1:])
    assert all(s.cached_tokens > 0 for s in streams[1:])
    prompts = sum(s.prompt_tokens - s.cached_tokens for s in streams)
    assert sum(forwards) == prompts + 4 * 7


def test_fixed_shape_decoding_as_cuda_graphs_replay_it_gives_the_same_tokens(tiny_engine):
    """The padded-bucket decode path that a GPU captures, run eagerly: same greedy tokens as the
    packed path, with replies joining and leaving (holes in the cache rows, padding rows)."""
    params = [SamplingParams(temperature=0, max_new_tokens=n) for n in (40, 5, 25)]
    results = {}
    for mode in ("off", "eager"):
        engine = engine_with(tiny_engine, max_batch_size=4, cuda_graphs=mode)
        first = engine.stream_reply(user(PROMPTS[1]), params[0])
        wait_for(lambda: first.completion_tokens >= 3)
        others = [engine.stream_reply(user(p), q) for p, q in zip(PROMPTS[2:], params[1:])]
        for stream in [first, *others]:
            stream.text()
        results[mode] = [s.token_ids for s in (first, *others)]
        if mode == "eager":
            static = engine.loop.runner.static_decode
            assert static is not None and static.ids is not None  # it ran, and never fell back
    assert results["eager"] == results["off"]
