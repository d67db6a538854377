"""Attention over packed inputs: one forward holds the decode tokens of running replies and the
prompt chunks of new ones, all in one row of tokens ([1, tokens]).

The model's linear layers see the packed tokens as one sequence; only attention must know
which reply each token belongs to. We register an attention function with transformers
that does this, given a StepLayout passed in place of the attention mask: it writes each
token's key and value into its reply's cache slot, then attends
  - for all decode tokens at once: one query per slot row against the cache rows, with a
    mask of each row's length (each kv head's query heads folded together);
  - for each prompt chunk: its queries against its own slot, causally.
Called with an ordinary mask (plain `model.generate`), it is transformers' SDPA attention.
"""
from dataclasses import dataclass

import torch
from torch.nn.functional import scaled_dot_product_attention
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "chatsite_slots"


@dataclass
class PromptChunk:
    offset: int  # where its tokens sit in the packed row
    length: int
    slot: int
    start: int  # positions already in the slot before this chunk
    mask: torch.Tensor | None  # [1, 1, length, start + length]; None: plainly causal (start == 0)


@dataclass
class StepLayout:
    cache: object  # the SlotCache
    slots: torch.Tensor  # [tokens] cache row of each packed token
    positions: torch.Tensor  # [tokens] position of each packed token
    decode_count: int  # the first decode_count tokens are decode tokens, one per reply
    decode_slots: torch.Tensor | None  # [decode_count]
    decode_mask: torch.Tensor | None  # [decode_count, 1, 1, kv_length] True where a decode token may attend
    chunks: list


def build_layout(cache, decode, chunks, device):
    """decode: [(slot, position)], one per decode token, in packed order; chunks: [(slot, start, length)]
    after them, in packed order."""
    slots, positions = [], []
    for slot, position in decode:
        slots.append(slot)
        positions.append(position)
    prompt_chunks, offset = [], len(decode)
    for slot, start, length in chunks:
        slots += [slot] * length
        positions += range(start, start + length)
        mask = None
        if start:
            keys = torch.arange(start + length, device=device)
            queries = torch.arange(start, start + length, device=device)
            mask = (keys[None, :] <= queries[:, None])[None, None]
        prompt_chunks.append(PromptChunk(offset, length, slot, start, mask))
        offset += length
    decode_slots = decode_mask = None
    if decode:
        lengths = [position + 1 for _, position in decode]
        kv_length = max(lengths)
        lengths = torch.tensor(lengths, device=device)
        decode_mask = (torch.arange(kv_length, device=device)[None, :] < lengths[:, None])[:, None, None, :]
        decode_slots = torch.tensor([slot for slot, _ in decode], device=device)
    return StepLayout(cache, torch.tensor(slots, device=device), torch.tensor(positions, device=device),
                      len(decode), decode_slots, decode_mask, prompt_chunks)


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    layout = attention_mask
    if not isinstance(layout, StepLayout):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    cache, layer = layout.cache, module.layer_idx
    cache.write(layer, key, value, layout.slots, layout.positions)
    keys, values = cache.keys[layer], cache.values[layer]
    outputs = []
    if layout.decode_count:
        # One query per decoding reply: fold each kv head's group of query heads into the query-length
        # axis (as transformers does for single-token decode), so SDPA needs no GQA expansion of the
        # cache; it reads only the decoding replies' rows (gathered), not every row of the cache.
        kv_length = layout.decode_mask.shape[-1]
        heads, kv_heads, head_dim = query.shape[1], keys.shape[1], query.shape[3]
        decoded = query[0, :, : layout.decode_count].transpose(0, 1).reshape(-1, kv_heads, heads // kv_heads, head_dim)
        rows_keys = keys[:, :, :kv_length].index_select(0, layout.decode_slots)
        rows_values = values[:, :, :kv_length].index_select(0, layout.decode_slots)
        out = scaled_dot_product_attention(decoded, rows_keys, rows_values, attn_mask=layout.decode_mask,
                                           scale=scaling)
        outputs.append(out.reshape(-1, heads, head_dim).transpose(0, 1).unsqueeze(0))
    for chunk in layout.chunks:
        end = chunk.start + chunk.length
        out = scaled_dot_product_attention(
            query[:, :, chunk.offset: chunk.offset + chunk.length],
            keys[chunk.slot: chunk.slot + 1, :, :end], values[chunk.slot: chunk.slot + 1, :, :end],
            attn_mask=chunk.mask, is_causal=chunk.mask is None, scale=scaling, enable_gqa=True)
        outputs.append(out)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, slot_attention)
