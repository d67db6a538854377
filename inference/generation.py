"""Sampling, and the reader's side of a reply: an iterator of text pieces fed by the scheduler."""
import queue
import threading

import torch

from .errors import EngineError
from .sampling import is_greedy


def sample(logits, params, generator=None):
    """Pick the next token id from one row of logits (shape [1, vocab]).
    Raises EngineError when the model produced no usable numbers (NaN or infinite logits)."""
    if is_greedy(params):
        token = int(logits.argmax(dim=-1))
        if not bool(torch.isfinite(logits[0, token])):
            raise EngineError("the model produced invalid numbers (NaN or infinity) for this reply")
        return token
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise EngineError("the model produced invalid numbers (NaN or infinity) for this reply")
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest set whose mass reaches top_p (always at least the top token)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        outside[..., 0] = False  # a top_p below float32's smallest number would otherwise drop them all
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class Finished:
    def __init__(self, reason):
        self.reason = reason


class ReplyStream:
    """An iterator of text pieces; once it ends, finish_reason and the token counts are set.

    The engine's scheduler generates in its own thread and hands pieces over through a queue;
    reading waits at most `read_timeout` seconds for each piece, so a stuck generator can
    never block its reader forever. cancel() may be called from any thread.
    """

    def __init__(self, prompt_ids, params, dropped_messages=0, read_timeout=600.0):
        self.prompt_ids = prompt_ids
        self.params = params
        self.dropped_messages = dropped_messages
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.token_ids = []  # the generated ids, end-of-turn token excluded
        self.finish_reason = None
        self.read_timeout = read_timeout
        self.queue_position = 0  # > 0 while waiting for a place in the batch
        self._events = queue.Queue()
        self._cancelled = threading.Event()

    def cancel(self):
        self._cancelled.set()

    @property
    def cancelled(self):
        return self._cancelled.is_set()

    def __iter__(self):
        while self.finish_reason is None:
            try:
                item = self._events.get(timeout=self.read_timeout)
            except queue.Empty:
                self.cancel()
                raise EngineError(f"generation produced nothing for {self.read_timeout:g} s") from None
            if isinstance(item, Finished):
                self.finish_reason = item.reason
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    def text(self):
        """Run to the end and return the whole reply."""
        return "".join(self)

    # --- called by the scheduler thread ---
    def _put(self, item):
        self._events.put(item)
