"""Batched sampling: per-row parameters in one call, seeded rows reproducible in any batch."""
import math

import torch

from inference import SamplingParams
from inference.sampler import TOP_P_CANDIDATES, sample_batch


def generator(seed):
    return torch.Generator().manual_seed(seed)


def draw(logits, params, seed, steps):
    """`steps` tokens for a row sampled with its own seeded generator, each step in a fresh batch."""
    g = generator(seed)
    return [sample_batch(logits, params, [g])[0][0] for _ in range(steps)]


def test_a_seeded_row_draws_the_same_tokens_alone_or_in_any_batch():
    torch.manual_seed(0)
    logits = torch.randn(1, 50)
    seeded = SamplingParams(temperature=1.0, top_p=0.9, seed=42)
    alone = draw(logits, [seeded], 42, 20)
    g, in_batch = generator(42), []
    for step in range(20):
        others = torch.randn(3, 50)  # different neighbours every step
        batch = torch.cat([others[:1], logits, others[1:]])
        params = [SamplingParams(temperature=0), seeded, SamplingParams(temperature=1.5, top_p=0.5),
                  SamplingParams(temperature=0.3)]
        tokens, valid = sample_batch(batch, params, [None, g, None, generator(step)])
        in_batch.append(tokens[1])
        assert all(valid)
    assert in_batch == alone
    assert len(set(alone)) > 3  # it really samples


def test_each_row_keeps_its_own_parameters():
    logits = torch.tensor([[2.0, 1.9, 1.8, -5.0]] * 3)
    params = [SamplingParams(temperature=0),  # greedy
              SamplingParams(temperature=1.0, top_p=1e-9),  # only the top token survives
              SamplingParams(temperature=1.0, top_p=1.0)]  # anything but the unlikely last one
    seen = [set(), set(), set()]
    g = generator(1)
    for _ in range(200):
        tokens, _ = sample_batch(logits, params, [None, None, g])
        for row, token in enumerate(tokens):
            seen[row].add(token)
    assert seen[0] == {0} and seen[1] == {0}
    assert seen[2] == {0, 1, 2}


def test_top_p_keeps_the_smallest_set_that_reaches_it():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[None].repeat(2, 1)
    g1, g2 = generator(3), generator(4)
    seen = [set(), set()]
    for _ in range(300):
        tokens, _ = sample_batch(logits, [SamplingParams(temperature=1.0, top_p=0.75),
                                          SamplingParams(temperature=1.0, top_p=0.85)], [g1, g2])
        seen[0].add(tokens[0])
        seen[1].add(tokens[1])
    assert seen == [{0, 1}, {0, 1, 2}]


def test_tokens_are_drawn_with_the_model_s_probabilities():
    probs = torch.tensor([0.6, 0.3, 0.1])
    rows = 1000
    tokens, _ = sample_batch(probs.log()[None].repeat(rows, 1), [SamplingParams(temperature=1.0, top_p=1.0)] * rows,
                             [generator(row) for row in range(rows)])
    counts = [tokens.count(k) / rows for k in range(3)]
    for observed, expected in zip(counts, probs.tolist()):
        assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / rows)


def test_temperature_flattens_or_sharpens_the_distribution():
    logits = torch.tensor([[1.0, 0.0]]).repeat(2000, 1)
    share = {}
    for temperature in (0.25, 2.0):
        tokens, _ = sample_batch(logits, [SamplingParams(temperature=temperature, top_p=1.0)] * 2000,
                                 [generator(row) for row in range(2000)])
        share[temperature] = tokens.count(0) / 2000
    # p(top) = sigmoid(1 / T): 0.982 at T=0.25, 0.622 at T=2
    assert abs(share[0.25] - 0.982) < 0.02 and abs(share[2.0] - 0.622) < 0.05


def test_a_seeded_row_draws_the_same_tokens_whichever_way_its_neighbours_are_drawn():
    """On the CPU a row whose nucleus lies among the most likely tokens is drawn among them, and a
    row whose nucleus is wider from the whole vocabulary: a neighbour's way must not change a row's."""
    torch.manual_seed(5)
    vocab = 4 * TOP_P_CANDIDATES
    peaked = torch.randn(1, vocab)
    peaked[0, :20] += 12
    flat = torch.zeros(1, vocab)  # its nucleus at 0.9 holds 90% of the vocabulary
    seeded = SamplingParams(temperature=0.8, top_p=0.9, seed=7)
    alone = draw(peaked, [seeded], 7, 30)
    g, beside_flat = generator(7), []
    for step in range(30):
        tokens, valid = sample_batch(torch.cat([flat, peaked]), [SamplingParams(temperature=1.0, top_p=0.9), seeded],
                                     [generator(step), g])
        assert all(valid) and tokens[0] >= 0
        beside_flat.append(tokens[1])
    assert beside_flat == alone and len(set(alone)) > 3


def test_draws_among_the_candidates_follow_the_nucleus_probabilities():
    logits = torch.full((1, 4 * TOP_P_CANDIDATES), -30.0)
    logits[0, :3] = torch.tensor([0.6, 0.3, 0.1]).log()  # the nucleus at top_p 0.95: all three
    rows = 1000
    tokens, _ = sample_batch(logits.repeat(rows, 1), [SamplingParams(temperature=1.0, top_p=0.95)] * rows,
                             [generator(row) for row in range(rows)])
    assert set(tokens) == {0, 1, 2}
    for k, expected in enumerate([0.6, 0.3, 0.1]):
        assert abs(tokens.count(k) / rows - expected) < 4 * math.sqrt(expected * (1 - expected) / rows)
