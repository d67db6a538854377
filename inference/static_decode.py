"""Decode steps with fixed shapes, so that a GPU can replay them as CUDA graphs.

A decode-only step is padded to a batch bucket (1, 2, 4, 8, 16, 32, ...; padding rows write
to the cache's scratch row), and attention reads the batch's own cache rows (gathered by slot)
up to a length bucket (a power of two), with a mask of each reply's real length. With shapes
fixed, each (batch, length) bucket is captured once as a CUDA graph and then replayed: one launch instead of
hundreds of kernel launches from Python, which is what bounds an eager decode step of a
small model. Steps that read prompts run eagerly (inference.model_runner).

Where capture is impossible, the engine logs why and decodes eagerly. `mode="eager"` runs
the same fixed-shape forward without capture: the tests check it on the CPU.
"""
import logging

import torch

from . import attention

log = logging.getLogger(__name__)
MIN_LENGTH_BUCKET = 256


def batch_bucket(n):
    bucket = 1
    while bucket < n:
        bucket *= 2
    return bucket


class StaticDecode:
    def __init__(self, runner, mode):
        self.runner, self.capture = runner, mode == "graphs"
        self.graphs = {}  # (batch, length) -> (CUDAGraph, its logits tensor)
        self.pool = None
        self.ids = self._capacity = None  # buffers, allocated on the first step

    def run(self, decode):
        """Logits [len(decode), vocab] of one decode step for these sequences."""
        cache, n = self.runner.cache, len(decode)
        if cache.capacity != self._capacity:  # the cache grew: new tensors, so new buffers and graphs
            self._allocate()
        batch = batch_bucket(n)
        length = min(cache.capacity, max(MIN_LENGTH_BUCKET, batch_bucket(max(s.cached_tokens + 1 for s in decode))))
        device = self.runner.device
        pad = batch - n
        self.ids[:batch] = torch.tensor([s.token_ids[-1] for s in decode] + [0] * pad, device=device)
        self.slots[:batch] = torch.tensor([s.slot for s in decode] + [cache.scratch] * pad, device=device)
        self.positions[:batch] = torch.tensor([s.cached_tokens for s in decode] + [0] * pad, device=device)
        # padding rows (the scratch slot) attend to position 0 only: their output is unused
        lengths = torch.tensor([s.cached_tokens + 1 for s in decode] + [1] * pad, device=device)
        self.mask[:batch].copy_((torch.arange(self._capacity, device=device)[None, :] < lengths[:, None])[:, None, None, :])
        if not self.capture:
            return self._forward(batch, length)[:n]
        if (batch, length) not in self.graphs:
            self.graphs[(batch, length)] = self._capture(batch, length)
        graph, logits = self.graphs[(batch, length)]
        graph.replay()
        return logits[:n]

    def _allocate(self):
        cache, device = self.runner.cache, self.runner.device
        most = batch_bucket(cache.slots)
        self.ids = torch.zeros(most, dtype=torch.long, device=device)
        self.slots = torch.full((most,), cache.scratch, dtype=torch.long, device=device)
        self.positions = torch.zeros(most, dtype=torch.long, device=device)
        self.mask = torch.zeros(most, 1, 1, cache.capacity, dtype=torch.bool, device=device)
        self._capacity = cache.capacity
        self.graphs.clear()

    def _forward(self, batch, length):
        cache = self.runner.cache
        layout = attention.StepLayout(
            cache, self.slots[:batch], self.positions[:batch], decode_count=batch, decode_slots=self.slots[:batch],
            decode_mask=self.mask[:batch, ..., :length], chunks=[])
        return self.runner.forward(self.ids[:batch], self.positions[:batch], layout, logits_to_keep=0)

    def _capture(self, batch, length):
        # warm-up on a side stream (lazy initialisation must not happen during capture); it writes
        # this step's own keys and values, which the replay then writes again, identically
        stream = torch.cuda.Stream(self.runner.device)
        stream.wait_stream(torch.cuda.current_stream(self.runner.device))
        with torch.cuda.stream(stream):
            self._forward(batch, length)
        torch.cuda.current_stream(self.runner.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self._forward(batch, length)
        self.pool = graph.pool()
        log.info("captured a decode step: batch %s, cache length %s", batch, length)
        return graph, logits
