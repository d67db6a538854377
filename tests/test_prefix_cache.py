"""Prompt caching: an ended reply's keys and values serve the next prompt that begins the same way.

First the policy alone (the scheduler and inference.prefix_cache, no torch), then the engine over
the tiny model (greedy output with a reused prefix is token-identical to a cold read), then the
real packaged model in fp32 (slow).
"""
import itertools

import pytest
import torch

from inference import ReplyStream, SamplingParams, build_prompt
from inference.prefix_cache import best_match, common_prefix
from inference.scheduler import Copy, Scheduler, Sequence
from tests.engine_support import engine_with, fail_sampling, user, wait_for

_next_token = itertools.count(1000)


def fresh(n):
    """n token ids no other sequence in these tests has."""
    return [next(_next_token) for _ in range(n)]


def scheduler(**overrides):
    return Scheduler(**({"max_slots": 4, "max_cache_tokens": 10_000, "prefill_tokens": 1000} | overrides))


def serve(policy, sequence, replies=3):
    """Admit the sequence, read its prompt, sample `replies` tokens, and end it normally."""
    policy.add(sequence)
    plan = policy.schedule()
    assert sequence in plan.admitted
    for chunk in plan.prefill:
        chunk.sequence.read += chunk.length
        if chunk.completes_prompt:
            chunk.sequence.token_ids.append(next(_next_token))
    while len(sequence.token_ids) < replies:
        plan = policy.schedule()
        for seq in plan.decode:
            seq.token_ids.append(next(_next_token))
    policy.remove(sequence)
    return plan


# --- the policy -------------------------------------------------------------------------------
def test_the_longest_common_prefix_is_counted_and_one_prompt_token_is_always_left_to_read():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([], [1]) == 0
    assert best_match([1, 2, 3], [(0, [1, 9]), (1, [1, 2, 3, 4])]) == (1, 2)
    assert best_match([5, 6], [(0, [1])]) == (None, 0)


def test_the_next_turn_takes_its_conversations_slot_over_in_place_from_where_the_reply_ended():
    policy = scheduler()
    first = Sequence(fresh(50), 10)
    serve(policy, first, replies=5)
    slot_held = policy.idle.held(0)
    assert slot_held == first.prompt_ids + first.token_ids[:4]  # the last sampled token was never fed
    follow_up = Sequence(first.prompt_ids + first.token_ids + fresh(7), 10)
    policy.add(follow_up)
    plan = policy.schedule()
    assert follow_up.slot == 0 and plan.copies == [] and len(policy.idle) == 0  # in place
    assert follow_up.reused_tokens == 54 and plan.prefill[0].start == 54 and plan.prefill[0].length == 8
    assert policy.cache_stats()["hits"] == 1 and policy.cache_stats()["reused_tokens"] == 54


def test_two_conversations_sharing_a_system_prompt_share_it_and_nothing_after():
    policy = scheduler()
    system = fresh(30)
    alice = Sequence(system + fresh(20), 10)
    serve(policy, alice)
    alice_held = list(policy.idle.held(alice_slot := 0))
    bob = Sequence(system + fresh(15), 10)
    policy.add(bob)
    plan = policy.schedule()
    # bob copies the 30 shared rows into a slot of his own; alice's slot keeps her conversation
    assert plan.copies == [Copy(alice_slot, bob.slot, 30)] and bob.slot != alice_slot
    assert bob.reused_tokens == 30 and policy.idle.held(alice_slot) == alice_held
    # a third conversation copies from bob while bob is still reading his prompt (a running source)
    for chunk in plan.prefill:
        chunk.sequence.read += chunk.length
    carol = Sequence(system + fresh(5), 10)
    policy.add(carol)
    plan = policy.schedule()
    assert carol.reused_tokens == 30 and len(plan.copies) == 1 and plan.copies[0].length == 30
    assert carol.slot not in (alice_slot, bob.slot)
    # alice's next turn still finds all of hers, in place
    alice_next = Sequence(alice_held + fresh(3), 10)
    policy.add(alice_next)
    policy.schedule()
    assert alice_next.slot == alice_slot and alice_next.reused_tokens == len(alice_held)


def test_eviction_drops_idle_slots_least_recently_used_and_never_a_running_reply():
    policy = scheduler(max_slots=3, max_cache_tokens=200)
    old, newer = Sequence(fresh(40), 10), Sequence(fresh(40), 10)
    serve(policy, old)
    serve(policy, newer)
    running = Sequence(fresh(40), 20)
    policy.add(running)
    policy.schedule()
    held_by_running = (running.slot, list(running.prompt_ids))
    assert len(policy.idle) == 2
    # a newcomer needs the last slot and 100 tokens of budget: only the oldest idle slot gives way
    newcomer = Sequence(fresh(90), 10)
    policy.add(newcomer)
    policy.schedule()
    assert newcomer.slot == 0 and 0 not in policy.idle and 1 in policy.idle  # `old` held slot 0
    assert policy.cache_stats()["evictions"] == 1
    assert (running.slot, running.prompt_ids) == held_by_running and running in policy.running
    # with the budget spent by running replies, a newcomer waits: nobody's slot is taken from them,
    # and the idle slot that could not make room anyway keeps its contents
    waiting = Sequence(fresh(40), 10)  # 50 more: 210 of 200
    policy.add(waiting)
    policy.schedule()
    assert list(policy.waiting) == [waiting] and policy.running == [running, newcomer] and 1 in policy.idle


def test_a_slot_whose_prefix_was_just_copied_counts_as_recently_used():
    policy = scheduler(max_slots=3)
    system = fresh(30)
    shared, other = Sequence(system + fresh(10), 10), Sequence(fresh(40), 10)
    serve(policy, shared)  # slot 0, used before slot 1
    serve(policy, other)
    serve(policy, Sequence(system + fresh(5), 10))  # copies slot 0's system prompt into slot 2
    newcomer = Sequence(fresh(20), 10)  # needs a slot: the least recently used is now slot 1
    policy.add(newcomer)
    policy.schedule()
    assert newcomer.slot == 1 and 0 in policy.idle and 2 in policy.idle


def test_a_failed_reply_empties_its_slot_and_a_cancelled_one_keeps_what_it_read():
    policy = scheduler(prefill_tokens=20)
    failed = Sequence(fresh(30), 10)
    policy.add(failed)
    policy.schedule()
    failed.read = 20
    policy.remove(failed, keep_cache=False)
    assert len(policy.idle) == 0 and policy.schedule().prefill == []
    cancelled = Sequence(fresh(30), 10)
    policy.add(cancelled)
    plan = policy.schedule()
    plan.prefill[0].sequence.read += plan.prefill[0].length  # stopped half-way through its prompt
    slot = cancelled.slot
    policy.remove(cancelled)
    assert policy.idle.held(slot) == cancelled.prompt_ids[:20]
    again = Sequence(cancelled.prompt_ids, 10)
    policy.add(again)
    assert policy.schedule().prefill[0].start == 20


# --- the engine, on the tiny model --------------------------------------------------------------
GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


def cold(tiny_engine, warm, engine=None):
    """The tokens of the reply `warm` read from nothing: the same prompt tokens and parameters in
    an engine of its own, with an empty cache. Given the warm reply's `engine` (its reply ended),
    also checks that its slot holds the same keys and values as the cold read's."""
    reference = engine_with(tiny_engine)
    stream = reference.loop.submit(ReplyStream(list(warm.prompt_ids), warm.params))
    stream.text()
    assert stream.cached_tokens == 0
    if engine is not None:
        length = warm.prompt_tokens + len(warm.token_ids) - 1
        for got, want in zip(held_kv(engine, warm.prompt_ids, length), held_kv(reference, warm.prompt_ids, length)):
            assert torch.allclose(got, want, atol=1e-5), "a reused prefix holds other keys/values than a cold read"
    return stream.token_ids


def held_kv(engine, prompt_ids, length):
    """Each layer's keys and values of the idle slot holding this prompt, positions [0, length)."""
    scheduler, cache = engine.loop.scheduler, engine.loop.runner.cache
    slot = next(slot for slot, ids in scheduler.idle if ids[: len(prompt_ids)] == list(prompt_ids))
    return [layer[slot, :, :length] for layer in cache.keys + cache.values]


def reply(engine, messages, params=GREEDY, system=None):
    stream = engine.stream_reply(messages, params, system)
    text = stream.text()
    return stream, text


def test_greedy_output_with_a_reused_prefix_is_token_identical_to_a_cold_read(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=4)
    messages = user("tell me about dragons " * 10)
    first, text = reply(engine, messages)
    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "and knights?"}]
    second, _ = reply(engine, messages)
    assert second.cached_tokens >= first.prompt_tokens  # the whole first prompt, and more
    assert second.token_ids == cold(tiny_engine, second, engine)
    stats = engine.loop.stats()["prefix_cache"]
    assert stats["hits"] >= 1 and stats["reused_tokens"] >= second.cached_tokens


def test_replies_copying_a_running_replys_prefix_match_cold_reads(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=4)
    system = "You are a careful assistant who answers in one sentence. " * 8
    long_one = engine.stream_reply(user("first"), SamplingParams(temperature=0, max_new_tokens=200), system)
    wait_for(lambda: long_one.completion_tokens > 2)
    others = [engine.stream_reply(user(q), GREEDY, system) for q in ("second", "third question")]
    for stream in others:
        stream.text()
    assert long_one.finish_reason is None  # they copied from a reply still running
    for stream, question in zip(others, ("second", "third question")):
        assert stream.cached_tokens > 50 and stream.token_ids == cold(tiny_engine, stream, engine)
    long_one.cancel()
    long_one.text()
    assert long_one.token_ids == cold(tiny_engine, long_one)[: len(long_one.token_ids)]


def test_regenerate_edit_and_continue_reuse_the_expected_prefix(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=2)
    tokenizer = engine.tokenizer
    history = [{"role": "user", "content": "write a poem about the sea " * 5}]
    first, text = reply(engine, history)
    # regenerate: the same prompt again; all of it but the one token that gives the first logits
    again, _ = reply(engine, history)
    assert again.cached_tokens == first.prompt_tokens - 1 and again.token_ids == first.token_ids
    # continue: the prompt ends inside the reply; the sampled tokens are there already
    continued, _ = reply(engine, history + [{"role": "assistant", "content": text}])
    assert continued.cached_tokens >= first.prompt_tokens
    assert continued.token_ids == cold(tiny_engine, continued, engine)
    # edit: a different first message shares the prompt up to where the two differ
    edited = [{"role": "user", "content": "write a poem about the sun " * 5}]
    edited_ids, _ = build_prompt(tokenizer, edited, context_window=100_000, max_new_tokens=1)
    expected = common_prefix(edited_ids, first.prompt_ids)  # up to "sea" / "sun"
    edit, _ = reply(engine, edited)
    assert edited_ids == edit.prompt_ids and edit.cached_tokens == expected > 20
    assert edit.token_ids == cold(tiny_engine, edit, engine)


def test_the_turn_after_a_continued_reply_finds_the_whole_reply_in_the_cache(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=2)
    history = [{"role": "user", "content": "list the planets " * 4}]
    _, text = reply(engine, history)
    continued, more = reply(engine, history + [{"role": "assistant", "content": text}])
    # the worker stores the continued reply as one message: its text, then what the continuation said
    history += [{"role": "assistant", "content": text + more}, {"role": "user", "content": "thanks"}]
    after, _ = reply(engine, history)
    assert after.cached_tokens >= continued.prompt_tokens + len(continued.token_ids) - 1
    assert after.token_ids == cold(tiny_engine, after, engine)


def test_under_pressure_every_reply_still_matches_its_cold_read(tiny_engine):
    engine = engine_with(tiny_engine, max_batch_size=2, max_cache_tokens=400)
    conversations = [user(f"conversation {n}: " + "story " * (5 + n)) for n in range(4)]
    for _ in range(2):  # a turn each, twice round: idle slots are evicted and taken over in turn
        for messages in conversations:
            stream, text = reply(engine, messages)
            assert stream.token_ids == cold(tiny_engine, stream, engine)
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "more"}]
    assert engine.loop.stats()["prefix_cache"]["evictions"] > 0


def test_a_failed_reply_leaves_nothing_for_the_next_one_to_reuse(tiny_engine, monkeypatch):
    engine = engine_with(tiny_engine, max_batch_size=2)
    messages = user("a question that fails half-way " * 4)
    fail_sampling(monkeypatch, seed=7, after=3, message="boom")
    failed = engine.stream_reply(messages, SamplingParams(temperature=0, max_new_tokens=12, seed=7))
    with pytest.raises(Exception, match="boom"):
        failed.text()
    monkeypatch.undo()
    stats = engine.loop.stats()["prefix_cache"]
    assert stats["idle_slots"] == 0  # its slot was emptied, not kept
    stream, _ = reply(engine, messages)
    assert stream.cached_tokens == 0 and stream.token_ids == cold(tiny_engine, stream)


# --- the real packaged model, fp32 ---------------------------------------------------------------
@pytest.mark.slow
def test_the_real_model_answers_a_follow_up_from_the_cache_exactly_as_from_nothing(real_engine):
    from inference import Engine

    def fresh_engine():
        return Engine(real_engine.model, real_engine.tokenizer, real_engine.config, name="real")

    engine = fresh_engine()
    params = SamplingParams(temperature=0, max_new_tokens=16)
    system = "You answer questions about the document the user gives you."
    document = "\n".join(f"Line {n}: the {n}th sensor read {n * 7 % 31} degrees." for n in range(60))
    messages = user(f"[file sensors.txt]\n{document}\n[end of file]\n\nWhich line reads 0 degrees?")
    first, text = reply(engine, messages, params, system)
    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "And the highest?"}]
    second, _ = reply(engine, messages, params, system)
    assert second.cached_tokens >= first.prompt_tokens
    reference = fresh_engine().stream_reply(messages, params, system)
    reference.text()
    assert reference.cached_tokens == 0 and second.token_ids == reference.token_ids
