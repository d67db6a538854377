"""Batched sampling: the batch's logits in, the batch's next tokens out, in one go on the device.

Each row keeps its own temperature, top-p and seed. A token is drawn by inverse transform:
one uniform number u per row, and the first token whose cumulative probability reaches u
times the row's mass. A seeded row draws its u from its own generator, so it picks the same
tokens whether it runs alone or in a full batch. The only device-to-host transfer is the
final list of tokens and validity flags.
"""
import torch

from .sampling import is_greedy

TOP_P_CANDIDATES = 1024


def sample_batch(logits, params, generators):
    """logits: [rows, vocab]; params: one SamplingParams per row; generators: one torch.Generator
    (seeded rows) or None per row. Returns (tokens, valid): a row is invalid when the model produced
    no usable numbers for it (NaN or infinite logits)."""
    logits = logits.float()
    device = logits.device
    greedy_tokens = logits.argmax(dim=-1)
    valid = torch.isfinite(logits.gather(1, greedy_tokens[:, None]))[:, 0]
    greedy = [is_greedy(p) for p in params]
    if all(greedy):
        tokens = greedy_tokens
    else:
        temperatures = torch.tensor([1.0 if g else p.temperature for p, g in zip(params, greedy)], device=device)
        probs = torch.softmax(logits / temperatures[:, None], dim=-1)
        if any(p.top_p < 1.0 for p in params):
            probs = _keep_top_p(probs, torch.tensor([p.top_p if p.top_p < 1.0 else 2.0 for p in params], device=device))
        uniform = torch.rand(len(params), device=device)
        for row, generator in enumerate(generators):
            if generator is not None:
                uniform[row] = torch.rand(1, generator=generator, device=device)[0]
        cumulative = probs.cumsum(dim=-1)
        # 1 - u lies in (0, 1]: the target is above zero, so the token found has a probability above zero
        target = (1.0 - uniform) * cumulative[:, -1]
        sampled = torch.searchsorted(cumulative, target[:, None]).clamp_max_(probs.shape[-1] - 1)[:, 0]
        greedy_rows = torch.tensor(greedy, device=device)
        tokens = torch.where(greedy_rows, greedy_tokens, sampled)
        valid = torch.where(greedy_rows, valid, torch.isfinite(probs).all(dim=-1))
    tokens, valid = torch.stack([tokens, valid.long()]).tolist()  # the step's one transfer to the host
    return tokens, [bool(v) for v in valid]


def _keep_top_p(probs, top_p):
    """Zero every token outside the smallest set whose mass reaches the row's top_p (the top
    token always stays: a top_p below float32's smallest number would otherwise drop them all).
    Rows with top_p >= 1 are left whole. On the CPU the set is looked for among the
    TOP_P_CANDIDATES most likely tokens first (a partial sort, many times cheaper than sorting
    the vocabulary, and exact whenever their mass reaches top_p); a GPU sorts the whole
    vocabulary at once rather than wait for that check."""
    filtered = top_p < 1.0
    sorted_probs = None
    if probs.device.type == "cpu":
        sorted_probs, order = probs.topk(min(TOP_P_CANDIDATES, probs.shape[-1]), dim=-1)
        if not bool(((sorted_probs.sum(dim=-1) >= top_p) | ~filtered).all()):
            sorted_probs = None
    if sorted_probs is None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p[:, None]
    outside[:, 0] = False
    sorted_probs[outside] = 0.0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.where(filtered[:, None], kept, probs)
