"""The engine's loop: one thread owns the model and turns submitted replies into streamed tokens.

Each step: the scheduler (inference.scheduler) plans which replies decode and which prompt
chunks are read; the model runner (inference.model_runner) executes the plan in one forward
pass over a preallocated KV cache; the sampler (inference.sampler) picks every sampled row's
next token at once; the loop streams them and tells the scheduler which replies ended. An
ended reply's keys and values stay in its slot for a later prompt that begins the same way
(inference.prefix_cache), and the loop remembers which tokens each reply's text was sampled as,
for the prompt builder.

Failures stay as small as they can: a reply that cannot start, or whose token cannot be
handled, fails alone; a failed forward fails the replies in that step; only a bug kills the
thread, which healthy() then reports and restart() replaces.
"""
import atexit
import logging
import threading
import time

import torch

from .detokenizer import Detokenizers
from .host_memory import keep_freed_memory
from .errors import EngineError
from .model_runner import ModelRunner
from .prefix_cache import SampledReplies
from .sampler import Row, TokenCounts, sample_step
from .scheduler import Scheduler, Sequence
from .stop_strings import StopStrings

log = logging.getLogger(__name__)


class _Reply:
    """What the loop keeps per reply besides the scheduler's Sequence."""

    def __init__(self, stream):
        self.stream = stream
        self.sequence = Sequence(stream.prompt_ids, stream.params.max_new_tokens, owner=self)
        self.sequence.token_ids = stream.token_ids  # one list: what the reader sees is what the model was fed
        self.detokenizer = None
        self.generator = None  # seeded replies draw from their own generator
        params = stream.params
        self.stop_strings = StopStrings(params.stop) if params.stop else None
        self.stop_ids = frozenset(params.stop_token_ids)
        self.grammar = stream.grammar  # a structured reply's GrammarMatcher, or None
        self.text = []  # the pieces streamed, to remember which tokens make this text

    def start(self, detokenizers, device, counts):
        self.stream.cached_tokens = self.sequence.reused_tokens
        self.detokenizer = detokenizers.new()
        self.generator_device = device
        if self.stream.params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(self.stream.params.seed)
        if self.stream.params.penalized:
            counts.start(self.sequence.slot, self.sequence.prompt_ids)

    def row(self, stop_token_ids):
        """This reply's row of the next sampling step."""
        params = self.stream.params
        banned = ()
        if self.stream.completion_tokens < params.min_tokens:  # too early to end
            banned = tuple(stop_token_ids | self.stop_ids)
        allowed = self.grammar.allowed(self.generator_device) if self.grammar is not None else None
        return Row(params, self.generator, self.sequence.slot, banned, allowed)


class EngineLoop:
    def __init__(self, model, tokenizer, stop_token_ids, *, max_batch_size, max_cache_tokens, prefill_chunk_tokens,
                 slot_tokens, vocab_size, cuda_graphs="auto"):
        self.model, self.tokenizer, self.stop_token_ids = model, tokenizer, stop_token_ids
        keep_freed_memory()  # activations are not handed back to the system between steps (inference.host_memory)
        self.detokenizers = Detokenizers(tokenizer)  # its token -> bytes table is built once, here
        self.device = next(model.parameters()).device
        self.max_batch_size, self.slot_tokens, self.cuda_graphs = max_batch_size, slot_tokens, cuda_graphs
        self.scheduler = Scheduler(max_slots=max_batch_size, max_cache_tokens=max_cache_tokens,
                                   prefill_tokens=prefill_chunk_tokens, slot_tokens=slot_tokens)
        self.runner = None  # built on first use: the KV cache is allocated then
        self.counts = TokenCounts(max_batch_size, vocab_size, self.device)  # for penalties
        self.sampled_replies = SampledReplies()  # read by the prompt builder (any thread)
        self._wake = threading.Condition()  # guards the scheduler; wakes the thread
        # where the loop's time goes (the forward is asynchronous on a GPU: its wait shows under sample)
        self.timings = {"steps": 0, "tokens": 0, "schedule_s": 0.0, "forward_s": 0.0, "sample_s": 0.0, "stream_s": 0.0}
        self._thread = None
        self._closed = False

    # --- any thread ---
    def submit(self, stream):
        reply = _Reply(stream)
        with self._wake:
            if self._closed:
                raise EngineError("the engine is shut down")
            if not self.healthy():
                raise EngineError("the engine failed and is restarting; try again in a moment")
            self.scheduler.add(reply.sequence)  # refuses a reply that could never fit
            stream.on_cancel(self._notify)
            if self._thread is None:
                self._start_thread()
                # stop the thread before the interpreter tears torch down under it (else: abort at exit)
                atexit.register(self.close)
            self._update_positions()
            self._wake.notify()
        return stream

    def healthy(self):
        """False once the loop thread has died (until restart()); True before it first starts."""
        return self._thread is None or self._thread.is_alive() or self._closed

    def restart(self):
        """Start a new loop thread after the old one died (which ended every reply it held)."""
        with self._wake:
            if self.healthy():
                return False
            self._start_thread()
            self._update_positions()
        log.warning("engine loop restarted")
        return True

    def close(self):
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def stats(self):
        with self._wake:
            running = self.scheduler.running
            return {"active": len(running), "prefilling": sum(not s.prompt_done for s in running),
                    "waiting": len(self.scheduler.waiting), "cache_tokens": self.scheduler.reserved_tokens(),
                    "prefix_cache": self.scheduler.cache_stats()}

    def _notify(self):
        with self._wake:
            self._wake.notify()

    def _start_thread(self):
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    # --- the loop thread ---
    def _run(self):
        try:
            with torch.inference_mode():
                if self.runner is None:
                    self.runner = ModelRunner(self.model, self.max_batch_size, self.slot_tokens, self.cuda_graphs)
                while self._next_plan_or_close():
                    self._step()
        except BaseException:
            # Only a bug gets here (every reply's failure is caught in _step). The thread ends and
            # healthy() says so; the owner (the worker) calls restart().
            log.critical("the engine loop died", exc_info=True)
            with self._wake:
                for sequence in list(self.scheduler.running) + list(self.scheduler.waiting):
                    self._end(sequence.owner, error=EngineError("the engine failed; this reply was stopped"))
            raise

    def _next_plan_or_close(self):
        with self._wake:
            while not self._closed and not len(self.scheduler):
                self._wake.wait()
            return not self._closed

    def _step(self):
        started = time.perf_counter()
        with self._wake:
            self._end_cancelled()
            plan = self.scheduler.schedule()
            self._update_positions()
            for sequence in plan.admitted:
                if not self._start(sequence.owner):
                    plan.prefill = [c for c in plan.prefill if c.sequence is not sequence]
        if not plan:
            return
        try:
            scheduled = time.perf_counter()
            sequences, logits = self.runner.run(plan)
            ran = time.perf_counter()
            drawn = sample_step(logits, [s.owner.row(self.stop_token_ids) for s in sequences], self.counts)
            sampled = time.perf_counter()
        except Exception as exc:  # a failed forward ends the replies in it, never the thread
            log.exception("generation step failed")
            with self._wake:
                for sequence in plan.decode + [chunk.sequence for chunk in plan.prefill]:
                    self._end(sequence.owner, error=EngineError(f"generation failed: {exc}"))
            return
        for sequence, token, ok, logprobs in zip(sequences, drawn.tokens, drawn.valid, drawn.logprobs):
            try:
                self._accept(sequence.owner, token, ok, logprobs)
            except Exception as exc:  # this row's token could not be handled: only this reply ends
                log.exception("reply failed in decode")
                with self._wake:
                    self._end(sequence.owner, error=EngineError(f"generation failed: {exc}"))
        timings = self.timings
        timings["steps"] += 1
        timings["tokens"] += plan.tokens
        timings["schedule_s"] += scheduled - started
        timings["forward_s"] += ran - scheduled
        timings["sample_s"] += sampled - ran
        timings["stream_s"] += time.perf_counter() - sampled

    def _start(self, reply):
        try:
            reply.start(self.detokenizers, self.device, self.counts)
            return True
        except Exception as exc:  # this reply cannot start; the others can
            log.exception("starting a reply failed")
            self._end(reply, error=EngineError(f"the reply could not start: {exc}"))
            return False

    def _accept(self, reply, token, ok, logprobs=None):
        """Stream one sampled token, or end the reply (stop token or string, length, invalid numbers)."""
        stream = reply.stream
        if not ok:
            raise EngineError("the model produced invalid numbers (NaN or infinity) for this reply")
        if token in self.stop_token_ids or token in reply.stop_ids:
            return self._finish(reply, "stop")
        if reply.grammar is not None:
            reply.grammar.accept(token)
        piece = reply.detokenizer.add(token)
        if reply.stop_strings is not None:
            piece = reply.stop_strings.feed(piece)
        reply.text.append(piece)
        stream.add_token(token, piece, logprobs)
        if reply.stop_strings is not None and reply.stop_strings.stopped:
            self._finish(reply, "stop")
        elif stream.completion_tokens >= stream.params.max_new_tokens:
            self._finish(reply, "length")

    def _finish(self, reply, reason):
        """End the reply normally: the text its detokenizer (and stop-string matcher) still holds,
        then its finish reason."""
        tail = reply.detokenizer.flush() if reply.detokenizer else ""
        if reply.stop_strings is not None:
            tail = reply.stop_strings.feed(tail) + reply.stop_strings.flush()
        if tail:
            reply.text.append(tail)
            reply.stream.push(tail)
        text, ids = "".join(reply.text), list(reply.stream.token_ids)
        if reply.stream.continues:  # the stored reply is the continued text and this one's
            text, ids = reply.stream.continues[0] + text, list(reply.stream.continues[1]) + ids
        if reply.stop_strings is None or not reply.stop_strings.stopped:  # else its tokens say more than its text
            self.sampled_replies.remember(text, ids)
        with self._wake:
            self._end(reply, reason=reason)

    def _end(self, reply, reason=None, error=None):
        """Take the reply out of the scheduler and close its stream (called holding the lock)."""
        # a failed reply's slot may hold anything (a forward that broke halfway): its cache goes
        self.scheduler.remove(reply.sequence, keep_cache=error is None)
        if error is not None:
            reply.stream.fail(error)
        else:
            reply.stream.finish(reason)

    def _end_cancelled(self):
        for sequence in [s for s in list(self.scheduler.waiting) + self.scheduler.running if s.owner.stream.cancelled]:
            self._finish(sequence.owner, "cancelled")

    def _update_positions(self):
        for sequence, position in self.scheduler.queue_positions().items():
            sequence.owner.stream.queue_position = position
        for sequence in self.scheduler.running:
            sequence.owner.stream.queue_position = 0
