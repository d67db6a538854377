"""Continuous batching: every active reply advances in the same forward pass.

One thread owns the model. Each round it admits waiting replies (first come, first served,
within the batch-size and KV-cache budgets), runs one prefill chunk for the oldest reply
still reading its prompt, and one decode step for every reply already generating. Replies
join the batch when their prompt is read and leave it the moment they finish or are
cancelled. A long prompt is read in chunks, so it delays the others by one chunk per round,
not by its whole prefill.

The batch shares one KV cache, left-padded to the longest member, with an attention mask
marking the padding and explicit position ids per row.
"""
import atexit
import collections
import logging
import threading
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .detokenizer import IncrementalDetokenizer
from .errors import EngineError
from .generation import Finished, sample

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    stream: object  # the ReplyStream this slot feeds
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator | None
    reserved_tokens: int
    cache: DynamicCache | None = None  # own cache while reading the prompt
    read: int = 0  # prompt tokens read so far
    length: int = 0  # real tokens in the cache
    next_token: int | None = None  # sampled, not yet fed to the model
    pieces: list = field(default_factory=list)


class BatchScheduler:
    def __init__(self, model, tokenizer, stop_token_ids, *, max_batch_size=8, max_cache_tokens=65536,
                 prefill_chunk_tokens=256):
        self.model, self.tokenizer, self.stop_token_ids = model, tokenizer, stop_token_ids
        self.device = next(model.parameters()).device
        self.max_batch_size, self.max_cache_tokens = max_batch_size, max_cache_tokens
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.waiting = collections.deque()  # ReplyStreams not yet admitted
        self.prefilling = []  # slots reading their prompt, oldest first
        self.active = []  # slots in the batch, in cache row order
        self.cache = None  # the batch's shared cache
        self.mask = None  # [batch, cache length] 1 for real tokens, 0 for padding
        self._wake = threading.Condition()
        self._thread = None
        self._closed = False

    # --- any thread ---
    def submit(self, stream):
        reserved = _reservation(stream)
        if reserved > self.max_cache_tokens:
            raise EngineError(f"this reply needs {reserved} tokens of KV cache; the budget is {self.max_cache_tokens}")
        with self._wake:
            if self._closed:
                raise EngineError("the engine is shut down")
            if not self.healthy():
                raise EngineError("the engine failed and is restarting; try again in a moment")
            if self._thread is None:
                self._start_thread()
                # stop the thread before the interpreter tears torch down under it (else: abort at exit)
                atexit.register(self.close)
            self.waiting.append(stream)
            self._update_positions()
            self._wake.notify()
        return stream

    def healthy(self):
        """False once the scheduler thread has died (until restart()); True before it first starts."""
        return self._thread is None or self._thread.is_alive() or self._closed

    def restart(self):
        """Start a new scheduler thread after the old one died. Replies that were generating end
        as errors (their text so far is theirs); those still waiting are served by the new thread."""
        with self._wake:
            if self.healthy():
                return False
            self._fail_all(EngineError("the engine failed and was restarted; this reply was lost"))
            self._start_thread()
            self._update_positions()
        log.warning("scheduler thread restarted")
        return True

    def _start_thread(self):
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    def close(self):
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def stats(self):
        return {"active": len(self.active), "prefilling": len(self.prefilling), "waiting": len(self.waiting),
                "cache_tokens": 0 if self.mask is None else int(self.mask.numel())}

    # --- the scheduler thread ---
    def _run(self):
        try:
            self._loop()
        except BaseException:
            # Only a bug gets here (every reply's failure is caught below). The thread ends and
            # healthy() says so; the owner (the worker) calls restart().
            log.critical("the scheduler thread died", exc_info=True)
            with self._wake:
                self._fail_all(EngineError("the engine failed; this reply was stopped"))
            raise

    def _loop(self):
        while True:
            with self._wake:
                while not self._closed and not (self.waiting or self.prefilling or self.active):
                    self._wake.wait()
                if self._closed:
                    return
                self._drop_cancelled_waiting()
                self._admit()
            try:
                with torch.inference_mode():
                    self._round()
            except Exception as exc:  # a failed forward ends every reply in it, never the thread
                log.exception("generation step failed")
                self._fail_all(EngineError(f"generation failed: {exc}"))

    def _round(self):
        for slot in [s for s in self.prefilling + self.active if s.stream.cancelled]:
            self._finish(slot, "cancelled")
        if self.prefilling:
            slot = self.prefilling[0]
            try:
                self._prefill_chunk(slot)
            except Exception as exc:  # one prompt's prefill runs alone: only its reply fails
                log.exception("prefill failed")
                self._fail(slot, exc)
        if self.active:
            self._decode_step()

    def _admit(self):
        for _ in range(self._admissible()):
            stream = self.waiting.popleft()
            stream.queue_position = 0
            try:
                generator = None
                if stream.params.seed is not None:
                    generator = torch.Generator(device=self.device).manual_seed(stream.params.seed)
                slot = _Slot(stream, IncrementalDetokenizer(self.tokenizer), generator, _reservation(stream),
                             cache=DynamicCache())
            except Exception as exc:  # this reply cannot start; the others can
                log.exception("admitting a reply failed")
                stream._put(EngineError(f"the reply could not start: {exc}"))
                continue
            self.prefilling.append(slot)
        self._update_positions()

    def _admissible(self):
        """How many of the waiting, from the head of the line, fit in the batch and the KV budget now."""
        slots = len(self.prefilling) + len(self.active)
        reserved = sum(s.reserved_tokens for s in self.prefilling + self.active)
        count = 0
        for stream in self.waiting:
            if slots + count >= self.max_batch_size or reserved + _reservation(stream) > self.max_cache_tokens:
                break  # first come, first served: nobody overtakes the head of the line
            reserved += _reservation(stream)
            count += 1
        return count

    def _update_positions(self):
        """0 for replies that will start at the next round, then 1, 2, ... for those that must wait."""
        admissible = self._admissible()
        for index, stream in enumerate(self.waiting):
            stream.queue_position = max(0, index + 1 - admissible)

    def _drop_cancelled_waiting(self):
        for stream in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(stream)
            stream._put(Finished("cancelled"))

    def _prefill_chunk(self, slot):
        prompt = slot.stream.prompt_ids
        chunk = prompt[slot.read: slot.read + self.prefill_chunk_tokens]
        positions = torch.arange(slot.read, slot.read + len(chunk), device=self.device).unsqueeze(0)
        # logits for the last position only: the vocabulary projection of every prompt token is waste
        out = self.model(input_ids=torch.tensor([chunk], device=self.device), position_ids=positions,
                         past_key_values=slot.cache, use_cache=True, logits_to_keep=1)
        slot.read += len(chunk)
        if slot.read < len(prompt):
            return
        self.prefilling.remove(slot)
        slot.length = len(prompt)
        if self._accept(slot, out.logits[:, -1, :]):
            self._join_batch(slot)

    def _decode_step(self):
        input_ids = torch.tensor([[s.next_token] for s in self.active], device=self.device)
        positions = torch.tensor([[s.length] for s in self.active], device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.active), 1))], dim=1)
        out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True)
        logits = out.logits[:, -1, :]
        finished = []
        for row, slot in enumerate(self.active):
            slot.length += 1
            try:
                if not self._accept(slot, logits[row: row + 1]):
                    finished.append(slot)
            except Exception as exc:  # sampling or detokenizing this row failed: only this reply ends
                log.exception("reply failed in decode")
                slot.stream._put(EngineError(f"generation failed: {exc}"))
                finished.append(slot)
        self._leave_batch(finished)

    def _accept(self, slot, logits):
        """Sample the slot's next token and stream it. False when the reply has ended."""
        stream = slot.stream
        token = sample(logits, stream.params, slot.generator)
        if token in self.stop_token_ids:
            self._end(slot, "stop")
            return False
        stream.completion_tokens += 1
        stream.token_ids.append(token)
        piece = slot.detokenizer.add(token)
        if piece:
            stream._put(piece)
        if stream.completion_tokens >= stream.params.max_new_tokens:
            self._end(slot, "length")
            return False
        slot.next_token = token
        return True

    def _end(self, slot, reason):
        tail = slot.detokenizer.flush()
        if tail:
            slot.stream._put(tail)
        slot.stream._put(Finished(reason))

    def _finish(self, slot, reason):
        if slot in self.prefilling:
            self.prefilling.remove(slot)
        else:
            self._leave_batch([slot])
        self._end(slot, reason)

    def _fail(self, slot, exc):
        if slot in self.prefilling:
            self.prefilling.remove(slot)
        elif slot in self.active:
            self._leave_batch([slot])
        slot.stream._put(exc if isinstance(exc, EngineError) else EngineError(f"generation failed: {exc}"))

    def _join_batch(self, slot):
        new_keys = [(layer.keys, layer.values) for layer in slot.cache.layers]
        new_mask = torch.ones((1, slot.length), dtype=torch.long, device=self.device)
        if self.cache is None:
            self.cache, self.mask = slot.cache, new_mask
        else:
            width, new_width = self.mask.shape[1], slot.length
            if new_width < width:
                new_keys = [(_left_pad(k, width - new_width), _left_pad(v, width - new_width)) for k, v in new_keys]
                new_mask = _left_pad(new_mask, width - new_width)
            elif new_width > width:
                for layer in self.cache.layers:
                    layer.keys, layer.values = _left_pad(layer.keys, new_width - width), _left_pad(
                        layer.values, new_width - width)
                self.mask = _left_pad(self.mask, new_width - width)
            for layer, (keys, values) in zip(self.cache.layers, new_keys):
                layer.keys = torch.cat([layer.keys, keys], dim=0)
                layer.values = torch.cat([layer.values, values], dim=0)
            self.mask = torch.cat([self.mask, new_mask], dim=0)
        slot.cache = None
        self.active.append(slot)

    def _leave_batch(self, slots):
        if not slots:
            return
        keep = [row for row, slot in enumerate(self.active) if slot not in slots]
        self.active = [self.active[row] for row in keep]
        if not keep:
            self.cache = self.mask = None
            return
        rows = torch.tensor(keep, device=self.device)
        mask = self.mask.index_select(0, rows)
        # drop the padding columns that no remaining row needs
        start = int((mask.sum(dim=0) > 0).nonzero()[0])
        self.mask = mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, rows)[:, :, start:, :]
            layer.values = layer.values.index_select(0, rows)[:, :, start:, :]

    def _fail_all(self, error):
        for slot in self.prefilling + self.active:
            slot.stream._put(error)
        self.prefilling, self.active, self.cache, self.mask = [], [], None, None


def _reservation(stream):
    """KV-cache tokens a reply may need: its prompt plus every token it may generate."""
    return stream.prompt_tokens + stream.params.max_new_tokens


def _left_pad(tensor, amount):
    """Pad dimension 2 (keys/values) or 1 (masks) on the left with zeros."""
    dim = 2 if tensor.dim() == 4 else 1
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
