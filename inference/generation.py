"""A reply as its reader sees it: an iterator of text pieces fed by the engine's loop."""
import queue
import threading

from .errors import EngineError


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
        self._on_cancel = None

    def cancel(self):
        """Ask the engine to stop this reply (any thread); it ends with finish_reason 'cancelled'."""
        self._cancelled.set()
        if self._on_cancel is not None:
            self._on_cancel()

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

    # --- the producer's side, called by the engine ---
    def on_cancel(self, callback):
        """Call `callback` (from the cancelling thread) when the reply is cancelled."""
        self._on_cancel = callback

    def push(self, piece):
        self._events.put(piece)

    def finish(self, reason):
        self._events.put(Finished(reason))

    def fail(self, error):
        self._events.put(error)
