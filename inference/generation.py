"""A readable decode loop: prefill, decode one token at a time, sample, stop."""
import threading

import torch

from .detokenizer import IncrementalDetokenizer


@torch.inference_mode()
def prefill(model, input_ids):
    out = model(input_ids=input_ids, use_cache=True)
    return out.logits[:, -1, :], out.past_key_values


@torch.inference_mode()
def decode_one_token(model, token_id, cache, device):
    out = model(input_ids=torch.tensor([[token_id]], device=device), past_key_values=cache, use_cache=True)
    return out.logits[:, -1, :], out.past_key_values


def sample(logits, params, generator=None):
    """Pick the next token id from the last position's logits (shape [1, vocab])."""
    if params.temperature == 0:
        return int(logits.argmax(dim=-1))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest set whose mass reaches top_p (always at least the top token)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class ReplyStream:
    """An iterator of text pieces; after it ends, finish_reason and token counts are set.

    cancel() may be called from any thread; the loop checks it before every token.
    """

    def __init__(self, engine, prompt_ids, params, dropped_messages=0):
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.params = params
        self.dropped_messages = dropped_messages
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.token_ids = []  # the generated ids, end-of-turn token excluded
        self.finish_reason = None
        self._cancelled = threading.Event()

    def cancel(self):
        self._cancelled.set()

    @property
    def cancelled(self):
        return self._cancelled.is_set()

    def __iter__(self):
        engine, params = self.engine, self.params
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=engine.device).manual_seed(params.seed)
        detokenizer = IncrementalDetokenizer(engine.tokenizer)
        with engine.generation_lock:
            if self._finish_if_cancelled():
                return
            input_ids = torch.tensor([self.prompt_ids], device=engine.device)
            logits, cache = prefill(engine.model, input_ids)
            while True:
                if self._finish_if_cancelled():
                    break
                token_id = sample(logits, params, generator)
                if token_id in engine.stop_token_ids:
                    self.finish_reason = "stop"
                    break
                self.completion_tokens += 1
                self.token_ids.append(token_id)
                piece = detokenizer.add(token_id)
                if piece:
                    yield piece
                if self.completion_tokens >= params.max_new_tokens:
                    self.finish_reason = "length"
                    break
                logits, cache = decode_one_token(engine.model, token_id, cache, engine.device)
        tail = detokenizer.flush()
        if tail:
            yield tail

    def text(self):
        """Run to the end and return the whole reply."""
        return "".join(self)

    def _finish_if_cancelled(self):
        if self._cancelled.is_set():
            self.finish_reason = "cancelled"
            return True
        return False
