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
        # a greedy row's draw is thrown away: top_p 0 makes it the cheapest
        top_p = torch.tensor([0.0 if g else p.top_p for p, g in zip(params, greedy)], device=device)
        uniform = torch.rand(len(params), device=device)
        for row, generator in enumerate(generators):
            if generator is not None:
                uniform[row] = torch.rand(1, generator=generator, device=device)[0]
        scaled = logits / temperatures[:, None]
        if device.type == "cpu":
            sampled, sampled_valid, fits = _draw_among_candidates(scaled, top_p, uniform)
            rest = (~fits).nonzero()[:, 0].tolist()  # rows whose nucleus reaches past the candidates
            if rest:
                sampled[rest], sampled_valid[rest] = _draw(scaled[rest], top_p[rest], uniform[rest],
                                                           any(params[r].top_p < 1.0 for r in rest))
        else:  # a GPU sorts the whole vocabulary at once rather than wait for a check on the host
            sampled, sampled_valid = _draw(scaled, top_p, uniform, any(p.top_p < 1.0 for p in params))
        greedy_rows = torch.tensor(greedy, device=device)
        tokens = torch.where(greedy_rows, greedy_tokens, sampled)
        valid = torch.where(greedy_rows, valid, sampled_valid)
    tokens, valid = torch.stack([tokens, valid.long()]).tolist()  # the step's one transfer to the host
    return tokens, [bool(v) for v in valid]


def _draw(scaled, top_p, uniform, any_top_p):
    """(tokens, valid) drawn by inverse transform over the whole vocabulary: one uniform number u per
    row, and the first token whose cumulative probability reaches (1 - u) times the row's kept mass;
    each row within its top_p nucleus (rows with top_p >= 1 whole). Valid: all its numbers finite."""
    probs = torch.softmax(scaled, dim=-1)
    if any_top_p:
        probs = _keep_top_p(probs, top_p)
    cumulative = probs.cumsum(dim=-1)
    # 1 - u lies in (0, 1]: the target is above zero, so the token found has a probability above zero
    target = (1.0 - uniform) * cumulative[:, -1]
    tokens = torch.searchsorted(cumulative, target[:, None]).clamp_max_(probs.shape[-1] - 1)[:, 0]
    return tokens, torch.isfinite(probs).all(dim=-1)


def _draw_among_candidates(scaled, top_p, uniform):
    """The same draw among each row's TOP_P_CANDIDATES most likely tokens (in that order), for the
    CPU: it reads the vocabulary's logits three times instead of eight. (tokens, valid, fits): fits
    is False for a row whose nucleus reaches past the candidates (top_p 1 always does); such a
    row's token must be drawn from the whole vocabulary. Each row's path depends on that row alone,
    so a seeded row draws the same token in any batch."""
    candidates = min(TOP_P_CANDIDATES, scaled.shape[-1])
    top, order = scaled.topk(candidates, dim=-1)  # most likely first
    log_mass = torch.logsumexp(scaled, dim=-1)
    probs = torch.exp(top - log_mass[:, None])
    before = probs.cumsum(dim=-1) - probs  # the mass of the more likely candidates
    fits = (top_p < 1.0) & (before[:, -1] + probs[:, -1] >= top_p)
    outside = before >= top_p[:, None]
    outside[:, 0] = False  # the top token always stays (a top_p below float32's smallest number)
    cumulative = probs.masked_fill(outside, 0.0).cumsum(dim=-1)
    target = (1.0 - uniform) * cumulative[:, -1]
    picked = torch.searchsorted(cumulative, target[:, None]).clamp_max_(candidates - 1)
    return order.gather(1, picked)[:, 0], torch.isfinite(log_mass), fits


def _keep_top_p(probs, top_p):
    """Zero every token outside the smallest set whose mass reaches the row's top_p (the top
    token always stays: a top_p below float32's smallest number would otherwise drop them all).
    Rows with top_p >= 1 are left whole."""
    filtered = top_p < 1.0
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p[:, None]
    outside[:, 0] = False
    sorted_probs[outside] = 0.0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.where(filtered[:, None], kept, probs)
