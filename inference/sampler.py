"""Batched sampling: the batch's logits in, the batch's next tokens out, in one go on the device.

Each row keeps its own settings (inference.sampling.SamplingParams). The logits of a row go
through, in order: its grammar's mask (the tokens a structured reply may take next), logit_bias,
the tokens it may not draw yet (stop tokens before min_tokens),
the repetition penalty (over its prompt and reply), the presence and frequency penalties (over
its reply); then greedy rows take the best token, the others are scaled by their temperature
and cut to their top-k, top-p and min-p before a token is drawn. Every step is one batched
tensor operation over the rows that use it; rows that use nothing cost nothing.

A token is drawn by inverse transform: one uniform number u per row, and the first token whose
cumulative probability reaches u times the row's kept mass; on the CPU among the row's 1,024 most
likely tokens when its cuts fall inside them (a partial sort instead of the vocabulary's), else
over the whole vocabulary. A seeded row draws its u from its own generator, and its way of drawing
depends on it alone, so it picks the same tokens whether it runs alone or in a full batch. The counts the
penalties need stay on the device (TokenCounts, one row per cache slot), updated in place. The
only device-to-host transfer is the list of tokens and validity flags (and the log-probabilities
of the rows that asked for them).
"""
from dataclasses import dataclass

import torch

from .sampling import SamplingParams, is_greedy

TOP_P_CANDIDATES = 1024


@dataclass
class Row:
    """One row of a step: its settings, its generator (seeded replies), its row in TokenCounts
    (replies with penalties), the token ids it may not draw this step, and the only ones it may
    (a [vocab] bool tensor, from its grammar) or None."""

    params: SamplingParams
    generator: torch.Generator | None = None
    slot: int | None = None
    banned: tuple = ()
    allowed: torch.Tensor | None = None


@dataclass
class Sampled:
    tokens: list
    valid: list  # False where the model produced no usable numbers (NaN or infinite logits)
    logprobs: list  # per row: None, or (logprob of the token, [(token, logprob)] of the most likely)


class TokenCounts:
    """On the device, per slot: how often each token was generated in its reply (a [slots, vocab]
    tensor, allocated the first time a reply needs it) and the ids of the tokens seen so far, its
    prompt's and its reply's (one tensor each, which grows by a token a step; repeats are harmless).
    The penalties read and write only the seen ids' logits, never the whole vocabulary's."""

    def __init__(self, slots, vocab_size, device):
        self.slots, self.vocab_size, self.device = slots, vocab_size, device
        self.generated = None
        self.seen = [None] * slots

    def start(self, slot, prompt_ids):
        """A new reply in `slot`: nothing generated yet; its prompt's tokens are seen."""
        if self.generated is None:
            self.generated = torch.zeros(self.slots, self.vocab_size, dtype=torch.int32, device=self.device)
        self.generated[slot].zero_()
        ids = torch.tensor(list(prompt_ids), dtype=torch.long, device=self.device).clamp_(0, self.vocab_size - 1)
        self.seen[slot] = ids.unique()

    def add(self, slots, tokens):
        """Count one generated token per row (slot indices, a list, and token ids, a device tensor)."""
        at = torch.tensor(slots, device=self.device)
        self.generated.index_put_((at, tokens), torch.ones_like(tokens, dtype=torch.int32), accumulate=True)
        for row, slot in enumerate(slots):
            self.seen[slot] = torch.cat([self.seen[slot], tokens[row: row + 1]])


def sample_batch(logits, params, generators):
    """The plain form: (tokens, valid) for rows with only temperature, top-p and seed."""
    sampled = sample_step(logits, [Row(p, g) for p, g in zip(params, generators)])
    return sampled.tokens, sampled.valid


def sample_step(logits, rows, counts=None):
    """logits: [rows, vocab]; rows: one Row each; counts: the TokenCounts of rows with penalties
    (updated with the tokens drawn). Returns Sampled."""
    raw = logits.float()
    device = raw.device
    count = len(rows)
    params = [row.params for row in rows]
    logits = _processed(raw, rows, counts)
    greedy_tokens = logits.argmax(dim=-1)
    valid = torch.isfinite(raw.gather(1, greedy_tokens[:, None]))[:, 0]
    greedy = [is_greedy(p) for p in params]
    if all(greedy):
        tokens = greedy_tokens
    else:
        uniform = torch.rand(count, device=device)
        for index, row in enumerate(rows):
            if row.generator is not None:
                uniform[index] = torch.rand(1, generator=row.generator, device=device)[0]
        # a greedy row's draw is thrown away: as a top_p of 0 it is the cheapest to draw
        cuts = _Cuts([_GREEDY_CUT if g else p for p, g in zip(params, greedy)], device)
        temperatures = torch.tensor([1.0 if g else p.temperature for p, g in zip(params, greedy)], device=device)
        scaled = logits / temperatures[:, None]
        if device.type == "cpu":
            sampled, sampled_valid, fits = _draw_among_candidates(scaled, cuts, uniform)
            rest = (~fits).nonzero()[:, 0].tolist()  # rows whose kept tokens reach past the candidates
            if rest:
                sampled[rest], sampled_valid[rest] = _draw(scaled[rest], cuts.rows(rest), uniform[rest])
        else:  # a GPU sorts the whole vocabulary at once rather than wait for a check on the host
            sampled, sampled_valid = _draw(scaled, cuts, uniform)
        greedy_rows = torch.tensor(greedy, device=device)
        tokens = torch.where(greedy_rows, greedy_tokens, sampled)
        valid = torch.where(greedy_rows, valid, sampled_valid)
    penalized = [index for index, row in enumerate(rows) if row.params.penalized]
    if penalized and counts is not None:
        at = torch.tensor(penalized, device=device)
        counts.add([rows[i].slot for i in penalized], tokens[at])
    logprobs = _logprobs(raw, tokens, rows)
    tokens, valid = torch.stack([tokens, valid.long()]).tolist()  # the step's one transfer to the host
    return Sampled(tokens, [bool(v) for v in valid], logprobs)


def _processed(logits, rows, counts):
    """The logits after each row's bias, bans and penalties (the same tensor when no row has any)."""
    masked = [i for i, row in enumerate(rows) if row.allowed is not None]
    biased = [(i, row.params.logit_bias) for i, row in enumerate(rows) if row.params.logit_bias]
    banned = [(i, row.banned) for i, row in enumerate(rows) if row.banned]
    penalized = [i for i, row in enumerate(rows) if row.params.penalized and counts is not None
                 and counts.generated is not None]
    if not (masked or biased or banned or penalized):
        return logits
    logits = logits.clone()
    device = logits.device
    if masked:
        at = torch.tensor(masked, device=device)
        allowed = torch.stack([rows[i].allowed for i in masked])
        logits[at] = logits[at].masked_fill(~allowed, float("-inf"))
    if biased:
        at = [(i, token, bias) for i, bias_map in biased for token, bias in bias_map.items()]
        row_ids = torch.tensor([a[0] for a in at], device=device)
        token_ids = torch.tensor([a[1] for a in at], device=device)
        logits.index_put_((row_ids, token_ids), torch.tensor([float(a[2]) for a in at], device=device),
                          accumulate=True)
    if banned:
        row_ids = torch.tensor([i for i, tokens in banned for _ in tokens], device=device)
        token_ids = torch.tensor([t for _, tokens in banned for t in tokens], device=device)
        logits.index_put_((row_ids, token_ids), torch.tensor(float("-inf"), device=device))
    for index in penalized:  # a few small operations per row, over the tokens it has seen
        params, slot = rows[index].params, rows[index].slot
        ids = counts.seen[slot]
        values = logits[index, ids]
        if params.repetition_penalty != 1.0:
            values = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
        if params.presence_penalty or params.frequency_penalty:
            generated = counts.generated[slot, ids].float()
            values = values - params.frequency_penalty * generated - params.presence_penalty * (generated > 0).float()
        logits[index, ids] = values
    return logits


def _logprobs(raw, tokens, rows):
    """For rows that asked: the log-probability of the drawn token under the model's own distribution
    (before any sampling setting, as vLLM reports it) and the most likely tokens'."""
    asked = [i for i, row in enumerate(rows) if row.params.logprobs]
    result = [None] * len(rows)
    if not asked:
        return result
    at = torch.tensor(asked, device=raw.device)
    logprobs = torch.log_softmax(raw[at], dim=-1)
    chosen = logprobs.gather(1, tokens[at][:, None])[:, 0].tolist()
    top = max(rows[i].params.top_logprobs for i in asked)
    values, ids = logprobs.topk(top, dim=-1) if top else (None, None)
    values, ids = (values.tolist(), ids.tolist()) if top else ([], [])
    for n, i in enumerate(asked):
        k = rows[i].params.top_logprobs
        result[i] = (chosen[n], list(zip(ids[n][:k], values[n][:k])) if k else [])
    return result


class _Cuts:
    """The rows' top-k, top-p and min-p, as tensors (0, 1 and 0 leave a row whole)."""

    def __init__(self, params, device):
        self.top_k = torch.tensor([p.top_k for p in params], device=device)
        self.top_p = torch.tensor([p.top_p for p in params], device=device)
        self.min_p = torch.tensor([p.min_p for p in params], device=device)
        self.any_top_k = any(p.top_k for p in params)
        self.any_top_p = any(p.top_p < 1.0 for p in params)
        self.any_min_p = any(p.min_p > 0.0 for p in params)

    def rows(self, indices):
        cuts = object.__new__(_Cuts)
        cuts.top_k, cuts.top_p, cuts.min_p = self.top_k[indices], self.top_p[indices], self.min_p[indices]
        cuts.any_top_k, cuts.any_top_p, cuts.any_min_p = (
            bool((cuts.top_k > 0).any()), bool((cuts.top_p < 1.0).any()), bool((cuts.min_p > 0).any()))
        return cuts


class _GreedyCut:
    top_k, top_p, min_p = 1, 0.0, 0.0


_GREEDY_CUT = _GreedyCut()


def _draw(scaled, cuts, uniform):
    """(tokens, valid) drawn by inverse transform over the whole vocabulary: one uniform number u per
    row, and the first token whose cumulative probability reaches (1 - u) times the row's kept mass.
    A row keeps its top_k tokens, then (among those, renormalized) its top_p nucleus, then those with
    at least min_p times the most likely one's probability. Valid: all its numbers finite."""
    if cuts.any_top_k:
        kth = _kth_largest(scaled, cuts.top_k)
        scaled = torch.where((cuts.top_k[:, None] > 0) & (scaled < kth), float("-inf"), scaled)
    probs = torch.softmax(scaled, dim=-1)
    if cuts.any_top_p:
        probs = _keep_top_p(probs, cuts.top_p)
    if cuts.any_min_p:
        probs = torch.where(probs < cuts.min_p[:, None] * probs.max(dim=-1, keepdim=True).values, 0.0, probs)
    cumulative = probs.cumsum(dim=-1)
    # 1 - u lies in (0, 1]: the target is above zero, so the token found has a probability above zero
    target = (1.0 - uniform) * cumulative[:, -1]
    tokens = torch.searchsorted(cumulative, target[:, None]).clamp_max_(probs.shape[-1] - 1)[:, 0]
    return tokens, torch.isfinite(probs).all(dim=-1)


def _draw_among_candidates(scaled, cuts, uniform):
    """The same draw among each row's TOP_P_CANDIDATES most likely tokens (in that order), for the
    CPU: it reads the vocabulary's logits three times instead of eight. (tokens, valid, fits): fits
    is False for a row whose kept tokens may reach past the candidates (one with none of top_k,
    top_p and min_p cutting inside them; top_p 1 alone never does); such a row's token must be
    drawn from the whole vocabulary. Each row's path depends on that row alone, so a seeded row
    draws the same token in any batch."""
    candidates = min(TOP_P_CANDIDATES, scaled.shape[-1])
    top, order = scaled.topk(candidates, dim=-1)  # most likely first
    index = torch.arange(candidates, device=scaled.device)
    k_inside = (cuts.top_k > 0) & (cuts.top_k <= candidates)
    in_top_k = ~k_inside[:, None] | (index[None, :] < cuts.top_k[:, None])
    # a top-k inside the candidates renormalizes among them; otherwise the mass is the whole vocabulary's
    log_mass = torch.where(k_inside, torch.logsumexp(top.masked_fill(~in_top_k, float("-inf")), dim=-1),
                           torch.logsumexp(scaled, dim=-1))
    probs = torch.exp(top - log_mass[:, None]).masked_fill(~in_top_k, 0.0)
    before = probs.cumsum(dim=-1) - probs  # the mass of the more likely candidates
    low = probs < cuts.min_p[:, None] * probs[:, :1]
    fits = (k_inside | ((cuts.top_p < 1.0) & (before[:, -1] + probs[:, -1] >= cuts.top_p))
            | ((cuts.min_p > 0) & low[:, -1])) & ~(cuts.top_k > candidates)
    outside = (before >= cuts.top_p[:, None]) | low | ~in_top_k
    outside[:, 0] = False  # the top token always stays (a top_p below float32's smallest number)
    cumulative = probs.masked_fill(outside, 0.0).cumsum(dim=-1)
    target = (1.0 - uniform) * cumulative[:, -1]
    picked = torch.searchsorted(cumulative, target[:, None]).clamp_max_(candidates - 1)
    return order.gather(1, picked)[:, 0], torch.isfinite(log_mass), fits


def _kth_largest(scaled, top_k):
    """Each row's k-th largest value (its largest where k is 0: such rows are not cut)."""
    k = top_k.clamp(1, scaled.shape[-1])
    largest = int(k.max())
    return scaled.topk(largest, dim=-1).values.gather(1, (k - 1)[:, None])


def _keep_top_p(probs, top_p):
    """Zero every token outside the smallest set whose mass reaches the row's top_p of its (kept) mass
    (the top token always stays: a top_p below float32's smallest number would otherwise drop them
    all). Rows with top_p >= 1 are left whole."""
    filtered = top_p < 1.0
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass = sorted_probs.sum(dim=-1, keepdim=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p[:, None] * mass
    outside[:, 0] = False
    sorted_probs[outside] = 0.0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.where(filtered[:, None], kept, probs)
