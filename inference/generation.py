"""A reply as its reader sees it: an iterator of text pieces fed by the engine's loop."""
import asyncio
import queue
import threading

from .errors import EngineError


class Finished:
    def __init__(self, reason):
        self.reason = reason


class ReplyStream:
    """An iterator of text pieces; once it ends, finish_reason and the token counts are set.

    The engine's loop generates in its own thread and hands pieces over through a queue;
    reading waits at most `read_timeout` seconds for each piece, so a stuck generator can
    never block its reader forever. A reader on an event loop takes the events from an
    asyncio queue instead (events_on), with no thread of its own. cancel() may be called
    from any thread.
    """

    def __init__(self, prompt_ids, params, dropped_messages=0, read_timeout=600.0):
        self.prompt_ids = prompt_ids
        self.params = params
        self.dropped_messages = dropped_messages
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.cached_tokens = 0  # prompt tokens whose keys and values were reused, not read
        self.continues = None  # (text, token ids) at the prompt's end, of the reply this one continues
        self.token_ids = []  # the generated ids, end-of-turn token excluded
        self.logprobs = []  # per generated token, when params.logprobs: (logprob, [(token id, logprob)])
        self.finish_reason = None
        self.read_timeout = read_timeout
        self.queue_position = 0  # > 0 while waiting for a place in the batch
        self.grammar = None  # a structured reply's matcher (inference.structured_output), set by the engine
        self._events = queue.Queue()
        self._deliver = self._events.put  # where the producer's events go
        self._lock = threading.Lock()
        self._read_to_end = False
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
        while not self._read_to_end:
            try:
                item = self._events.get(timeout=self.read_timeout)
            except queue.Empty:
                self.cancel()
                raise EngineError(f"generation produced nothing for {self.read_timeout:g} s") from None
            if isinstance(item, Finished):
                self._read_to_end = True
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    def events_on(self, loop):
        """Hand this reply's events, from now on, to an asyncio.Queue read on `loop`: text pieces,
        then a Finished (finish_reason is set) or the exception that ended it."""
        events = asyncio.Queue()
        with self._lock:
            while not self._events.empty():
                events.put_nowait(self._events.get_nowait())
            self._deliver = lambda item: loop.call_soon_threadsafe(events.put_nowait, item)
        return events

    def text(self):
        """Run to the end and return the whole reply."""
        return "".join(self)

    # --- the producer's side, called by the engine ---
    def on_cancel(self, callback):
        """Call `callback` (from the cancelling thread) when the reply is cancelled."""
        self._on_cancel = callback

    def add_token(self, token_id, piece, logprobs=None):
        """One generated token, and the text it completes ('' while a character is pending)."""
        self.token_ids.append(token_id)
        self.completion_tokens += 1
        if logprobs is not None:
            self.logprobs.append(logprobs)
        if piece:
            self._put(piece)

    def push(self, piece):
        self._put(piece)

    def finish(self, reason):
        self.finish_reason = reason
        self._put(Finished(reason))

    def fail(self, error):
        self._put(error)

    def _put(self, item):
        with self._lock:
            self._deliver(item)
