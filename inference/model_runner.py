"""The model runner: executes one scheduler Plan as one forward pass over packed inputs.

Decode tokens of running replies come first, then the plan's prompt chunks, all in one row
of tokens; attention (inference.attention) keeps each reply to its own cache slot. It
returns the logits of the tokens that are sampled: every decode token, and the last token
of each prompt that is read to its end in this step. Decode-only steps go through
inference.static_decode (replayed CUDA graphs on a GPU).
"""
import logging

import torch
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import attention
from .kv_cache import SlotCache
from .static_decode import StaticDecode

log = logging.getLogger(__name__)

# plain `generate` on the same model builds an ordinary SDPA mask; our function then is SDPA
AttentionMaskInterface.register(attention.NAME, sdpa_mask)


class ModelRunner:
    def __init__(self, model, slots, slot_tokens, cuda_graphs="auto"):
        """cuda_graphs: "auto" (capture decode steps on a GPU), "off", or "eager" (the fixed-shape
        decode path without capture, as the tests run it on the CPU)."""
        self.model = model
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.cache = SlotCache(model.config, slots, self.device, self.dtype, max_capacity=slot_tokens)
        model.set_attn_implementation(attention.NAME)
        layer_types = getattr(model.config.get_text_config(), "layer_types", None) or ["full_attention"]
        self._mask_kinds = set(layer_types)
        mode = {"auto": "graphs" if self.device.type == "cuda" else None, "off": None, "eager": "eager"}[cuda_graphs]
        self.static_decode = StaticDecode(self, mode) if mode else None

    def forward(self, token_ids, positions, layout, logits_to_keep):
        return self.model(
            input_ids=token_ids[None], position_ids=positions[None], attention_mask={k: layout for k in self._mask_kinds},
            use_cache=False, logits_to_keep=logits_to_keep).logits[0]

    @torch.inference_mode()
    def run(self, plan):
        """One forward for the plan. Returns (sequences, logits): the sequences that sample now and
        their logits, one row each. Advances each chunk's sequence past the prompt tokens read."""
        decode, chunks = plan.decode, plan.prefill
        for copy in plan.copies:  # reused prefixes, before anything this step writes
            self.cache.copy(copy.source, copy.target, copy.length)
        if not chunks and self.static_decode is not None:
            self.cache.ensure_capacity(max(s.cached_tokens + 1 for s in decode))
            try:
                return list(decode), self.static_decode.run(decode)
            except Exception:  # e.g. a kernel that cannot be captured: say why once, then decode eagerly
                log.warning("fixed-shape (CUDA graph) decoding failed; decoding eagerly from now on", exc_info=True)
                self.static_decode = None
        token_ids = [s.token_ids[-1] for s in decode]
        for chunk in chunks:
            token_ids += chunk.sequence.prompt_ids[chunk.start: chunk.start + chunk.length]
        ends = [s.cached_tokens + 1 for s in decode] + [c.start + c.length for c in chunks]
        self.cache.ensure_capacity(max(ends))
        layout = attention.build_layout(
            self.cache, [(s.slot, s.cached_tokens) for s in decode],
            [(c.sequence.slot, c.start, c.length) for c in chunks], self.device)
        sampled, rows, offset = list(decode), list(range(len(decode))), len(decode)
        for chunk in chunks:
            offset += chunk.length
            if chunk.completes_prompt:
                sampled.append(chunk.sequence)
                rows.append(offset - 1)
        logits = self.forward(torch.tensor(token_ids, device=self.device), layout.positions, layout,
                              torch.tensor(rows, device=self.device, dtype=torch.long))
        for chunk in chunks:
            chunk.sequence.read += chunk.length
        return sampled, logits
