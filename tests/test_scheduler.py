"""The scheduling policy on its own: no model, no torch, only plans."""
import itertools

import pytest

from inference import EngineError
from inference.scheduler import Scheduler, Sequence


_next_token = itertools.count(1)


def sequence(prompt_tokens, max_new_tokens=10):
    """A prompt of tokens no other test sequence has: it shares no prefix with them."""
    return Sequence([next(_next_token) for _ in range(prompt_tokens)], max_new_tokens)


def scheduler(**overrides):
    options = {"max_slots": 4, "max_cache_tokens": 10_000, "prefill_tokens": 100} | overrides
    return Scheduler(**options)


def run(plan, sampled_token=1):
    """What the engine does after a forward: prompts advance, sampling rows get a token."""
    for chunk in plan.prefill:
        chunk.sequence.read += chunk.length
        if chunk.completes_prompt:
            chunk.sequence.token_ids.append(sampled_token)
    for seq in plan.decode:
        seq.token_ids.append(sampled_token)


def test_simultaneous_arrivals_are_read_together_in_one_step():
    policy = scheduler(prefill_tokens=256)
    arrivals = [sequence(60) for _ in range(4)]
    for seq in arrivals:
        policy.add(seq)
    plan = policy.schedule()
    assert [(c.sequence, c.start, c.length) for c in plan.prefill] == [(s, 0, 60) for s in arrivals]
    assert all(c.completes_prompt for c in plan.prefill) and plan.decode == []
    run(plan)
    plan = policy.schedule()
    assert plan.decode == arrivals and plan.prefill == []  # every one decodes from the next step on


def test_running_replies_decode_every_step_while_a_long_prompt_is_read_in_chunks():
    policy = scheduler(prefill_tokens=32)
    running = sequence(10)
    policy.add(running)
    run(policy.schedule())
    long_one = sequence(100)
    policy.add(long_one)
    chunks = []
    while not long_one.prompt_done:
        plan = policy.schedule()
        assert running in plan.decode  # never stalled by the long prompt
        chunks += [(c.start, c.length) for c in plan.prefill]
        run(plan)
    assert chunks == [(0, 32), (32, 32), (64, 32), (96, 4)]
    assert plan.prefill[-1].completes_prompt


def test_the_prefill_budget_is_shared_oldest_prompt_first():
    policy = scheduler(prefill_tokens=50)
    first, second, third = sequence(30), sequence(30), sequence(30)
    for seq in (first, second, third):
        policy.add(seq)
    plan = policy.schedule()
    assert [(c.sequence, c.length) for c in plan.prefill] == [(first, 30), (second, 20)]
    assert list(policy.waiting) == [third]  # no budget left to start it this step
    run(plan)
    plan = policy.schedule()
    assert [(c.sequence, c.start, c.length) for c in plan.prefill] == [(second, 20, 10), (third, 0, 30)]
    assert plan.decode == [first]


def test_beyond_the_slots_replies_wait_first_come_first_served_and_learn_their_place():
    policy = scheduler(max_slots=2)
    arrivals = [sequence(5) for _ in range(4)]
    for seq in arrivals:
        policy.add(seq)
    assert list(policy.queue_positions().values()) == [0, 0, 1, 2]
    run(policy.schedule())
    assert [s.slot for s in arrivals[:2]] == [0, 1]
    assert policy.queue_positions() == {arrivals[2]: 1, arrivals[3]: 2}
    policy.remove(arrivals[1])
    assert policy.queue_positions() == {arrivals[2]: 0, arrivals[3]: 1}
    plan = policy.schedule()
    assert [c.sequence for c in plan.prefill] == [arrivals[2]] and arrivals[2].slot == 1  # the freed row


def test_the_kv_budget_holds_the_head_of_the_line_and_nobody_overtakes_it():
    policy = scheduler(max_cache_tokens=100)
    big, small_behind = sequence(50, 30), sequence(5, 5)
    running = sequence(20, 20)
    policy.add(running)
    run(policy.schedule())
    policy.add(big)  # needs 80 of the 60 left
    policy.add(small_behind)  # would fit, but waits behind the head
    plan = policy.schedule()
    assert plan.prefill == [] and list(policy.waiting) == [big, small_behind]
    assert policy.queue_positions() == {big: 1, small_behind: 2}
    policy.remove(running)
    plan = policy.schedule()
    assert [c.sequence for c in plan.prefill] == [big, small_behind]
    assert policy.reserved_tokens() == 90


def test_a_reply_that_could_never_fit_is_refused_when_added():
    policy = scheduler(max_cache_tokens=100, slot_tokens=80)
    with pytest.raises(EngineError, match="needs 81 tokens of KV cache; the budget is 80"):
        policy.add(sequence(71, 10))
    policy.add(sequence(70, 10))
    assert len(policy) == 1


def test_removing_a_waiting_or_running_reply_frees_what_it_held():
    policy = scheduler(max_slots=1)
    running, waiting = sequence(5), sequence(5)
    policy.add(running)
    policy.add(waiting)
    run(policy.schedule())
    policy.remove(waiting)
    assert list(policy.waiting) == [] and policy.queue_positions() == {}
    policy.remove(running)
    assert running.slot is None and len(policy) == 0 and policy.reserved_tokens() == 0
    assert not policy.schedule()


def test_the_cache_positions_follow_prompt_and_sampled_tokens():
    seq = sequence(6)
    seq.read = 6
    seq.token_ids.append(7)  # sampled from the prompt's last token, not yet fed back
    assert seq.cached_tokens == 6
    seq.token_ids.append(8)
    assert seq.cached_tokens == 7
