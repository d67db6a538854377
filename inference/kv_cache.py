"""The batch's KV cache: preallocated keys and values, one row (slot) per running reply.

A reply takes a free slot when it is admitted and gives it back when it ends; nothing is
copied when the batch changes. A slot keeps an ended reply's keys and values for a later prompt
that begins the same way (inference.prefix_cache), which reuses them in place or copies them. One extra row (`scratch`) takes the writes of the padding rows
of fixed-shape decode steps (inference.static_decode). A slot holds `capacity` positions; capacity starts small and
doubles (one copy, a handful of times in a process's life) when a reply needs more, up to
`max_capacity` (the engine's context window), so memory follows the longest reply served.
"""
import torch


class SlotCache:
    def __init__(self, model_config, slots, device, dtype, max_capacity, capacity=256):
        text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        heads = text_config.num_attention_heads
        self.kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
        self.head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        self.layers = text_config.num_hidden_layers
        self.slots, self.device, self.dtype = slots, device, dtype
        self.rows, self.scratch = slots + 1, slots
        self.max_capacity = max_capacity
        self.capacity = min(capacity, max_capacity)
        self.keys = [self._empty(self.capacity) for _ in range(self.layers)]
        self.values = [self._empty(self.capacity) for _ in range(self.layers)]

    def ensure_capacity(self, tokens):
        """Make every slot hold at least `tokens` positions."""
        if tokens <= self.capacity:
            return
        if tokens > self.max_capacity:
            raise ValueError(f"{tokens} positions exceed the cache's {self.max_capacity}")
        capacity = self.capacity
        while capacity < tokens:
            capacity *= 2
        capacity = min(capacity, self.max_capacity)
        for tensors in (self.keys, self.values):
            for layer, old in enumerate(tensors):
                tensors[layer] = self._empty(capacity)
                tensors[layer][:, :, : self.capacity] = old
        self.capacity = capacity

    def copy(self, source, target, length):
        """Copy the keys and values of positions [0, length) from slot `source` to slot `target`."""
        for tensors in (self.keys, self.values):
            for layer in tensors:
                layer[target, :, :length] = layer[source, :, :length]

    def write(self, layer, keys, values, slots, positions):
        """Store one forward's new keys/values ([1, kv_heads, tokens, head_dim]) at (slot, position) per token."""
        self.keys[layer][slots, :, positions] = keys[0].transpose(0, 1)
        self.values[layer][slots, :, positions] = values[0].transpose(0, 1)

    def _empty(self, capacity):
        return torch.zeros(self.rows, self.kv_heads, capacity, self.head_dim, device=self.device, dtype=self.dtype)
