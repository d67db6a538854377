"""The model runner: executes one scheduler Plan as one forward pass over packed inputs.

Decode tokens of running replies come first, then the plan's prompt chunks, all in one row
of tokens; attention (inference.attention) keeps each reply to its own cache slot. It
returns the logits of the tokens that are sampled: every decode token, and the last token
of each prompt that is read to its end in this step.
"""
import torch
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import attention
from .kv_cache import SlotCache

# plain `generate` on the same model builds an ordinary SDPA mask; our function then is SDPA
AttentionMaskInterface.register(attention.NAME, sdpa_mask)


class ModelRunner:
    def __init__(self, model, slots, slot_tokens):
        self.model = model
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.cache = SlotCache(model.config, slots, self.device, self.dtype, max_capacity=slot_tokens)
        model.set_attn_implementation(attention.NAME)
        layer_types = getattr(model.config.get_text_config(), "layer_types", None) or ["full_attention"]
        self._mask_kinds = set(layer_types)

    @torch.inference_mode()
    def run(self, plan):
        """One forward for the plan. Returns (sequences, logits): the sequences that sample now and
        their logits, one row each. Advances each chunk's sequence past the prompt tokens read."""
        decode, chunks = plan.decode, plan.prefill
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
        logits = self.model(
            input_ids=torch.tensor([token_ids], device=self.device), position_ids=layout.positions[None],
            attention_mask={kind: layout for kind in self._mask_kinds}, use_cache=False,
            logits_to_keep=torch.tensor(rows, device=self.device, dtype=torch.long),
        ).logits[0]
        for chunk in chunks:
            chunk.sequence.read += chunk.length
        return sampled, logits
