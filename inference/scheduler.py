"""The scheduling policy: which replies advance in the next forward pass, and by how much.

It only decides. Each step it returns a plan: every running reply whose prompt is read gets
one decode token, and prompt chunks fill the step's prefill budget (the oldest reply's
prompt first, several prompts per step when they fit), so a long prompt delays the others
by one chunk per step, never by its whole prefill. New replies are
admitted first come, first served while a cache slot and the KV budget allow. A reply
reserves its prompt plus every token it may generate when it is admitted, so the cache can
never overflow mid-reply and nothing is ever preempted: a reply that does not fit waits at
the head of the line (nobody overtakes it), and one that could never fit is refused when it
is added. No torch here: the model runner executes the plan.

Prompt caching (inference.prefix_cache): a reply that ends leaves its slot's keys and values in
place (idle), and a new reply starts from the longest prefix of its prompt that any slot holds,
idle or running. It takes an idle slot over in place when that slot holds nothing beyond the match
(the next turn of its conversation), or when no empty slot is left; otherwise the plan copies the
matched rows into a slot of its own (`Plan.copies`, done before the forward), so that the source
keeps serving its own conversation. Idle contents count against the KV budget and are dropped,
least recently used first, when a slot or budget is needed; a running reply's never are.
"""
import collections
from dataclasses import dataclass, field

from .errors import EngineError
from .prefix_cache import IdleSlots, best_match


class Sequence:
    """The scheduler's view of one reply: how much of it is in the KV cache, and where."""

    def __init__(self, prompt_ids, max_new_tokens, owner=None):
        self.prompt_ids = list(prompt_ids)
        self.max_new_tokens = max_new_tokens
        self.owner = owner  # whatever the engine attaches (its reply)
        self.read = 0  # prompt tokens already in the cache
        self.token_ids = []  # tokens sampled so far
        self.slot = None  # cache row, while admitted
        self.reused_tokens = 0  # prompt tokens found in the cache when it was admitted (not read)

    @property
    def prompt_tokens(self):
        return len(self.prompt_ids)

    @property
    def reserved_tokens(self):
        return self.prompt_tokens + self.max_new_tokens

    @property
    def cached_tokens(self):
        """Tokens whose keys and values are in the cache (the last sampled one is not yet)."""
        return self.read + max(0, len(self.token_ids) - 1)

    @property
    def prompt_done(self):
        return self.read >= self.prompt_tokens

    def cached_ids(self):
        """The token ids whose keys and values its slot holds, in order."""
        count = self.cached_tokens
        if count <= self.prompt_tokens:
            return self.prompt_ids[:count]
        return self.prompt_ids + self.token_ids[: count - self.prompt_tokens]


@dataclass
class Chunk:
    """`length` prompt tokens of `sequence`, from `start`, are read in this step."""

    sequence: Sequence
    start: int
    length: int

    @property
    def completes_prompt(self):
        return self.start + self.length >= self.sequence.prompt_tokens


@dataclass
class Copy:
    """Copy the keys and values of positions [0, length) of slot `source` into slot `target`."""

    source: int
    target: int
    length: int


@dataclass
class Plan:
    decode: list = field(default_factory=list)  # sequences that feed their last sampled token
    prefill: list = field(default_factory=list)  # Chunks of prompts
    admitted: list = field(default_factory=list)  # sequences that start in this step
    copies: list = field(default_factory=list)  # Copies, in order, before the forward

    @property
    def tokens(self):
        return len(self.decode) + sum(chunk.length for chunk in self.prefill)

    def __bool__(self):
        return bool(self.decode or self.prefill)


class Scheduler:
    def __init__(self, *, max_slots, max_cache_tokens, prefill_tokens, slot_tokens=None):
        self.max_slots = max_slots
        self.max_cache_tokens = max_cache_tokens
        self.prefill_tokens = prefill_tokens  # prompt tokens read per step, all prompts together
        self.slot_tokens = slot_tokens  # longest reply one cache row holds (None: no limit)
        self.waiting = collections.deque()
        self.running = []  # admitted, in admission order
        self._free_slots = list(range(max_slots))  # slots that hold nothing
        self.idle = IdleSlots()  # slots that hold an ended reply's keys and values

    def add(self, sequence):
        """Queue a sequence, or refuse one that could never fit (EngineError)."""
        needed = sequence.reserved_tokens
        limit = min(self.max_cache_tokens, self.slot_tokens or self.max_cache_tokens)
        if needed > limit:
            raise EngineError(f"this reply needs {needed} tokens of KV cache; the budget is {limit}")
        self.waiting.append(sequence)

    def remove(self, sequence, keep_cache=True):
        """Forget a sequence (finished, cancelled or failed) and free its reservation. Its slot keeps
        what the cache holds of it for later prompts, unless keep_cache is False (a failed forward
        may have left anything there): then the slot is emptied."""
        if sequence in self.running:
            self.running.remove(sequence)
            held = sequence.cached_ids() if keep_cache else []
            if held:
                self.idle.keep(sequence.slot, held)
            else:
                self._free(sequence.slot)
            sequence.slot = None
        elif sequence in self.waiting:
            self.waiting.remove(sequence)

    def schedule(self):
        """The plan for the next forward pass (empty when there is nothing to do)."""
        plan = Plan(decode=[s for s in self.running if s.prompt_done])
        budget = self.prefill_tokens
        for sequence in self.running:
            if budget <= 0:
                break
            if not sequence.prompt_done:
                budget -= self._chunk(plan, sequence, budget)
        while budget > 0 and self.admissible() > 0:
            sequence = self.waiting.popleft()
            self._place(sequence, plan)
            self.running.append(sequence)
            plan.admitted.append(sequence)
            budget -= self._chunk(plan, sequence, budget)
        return plan

    def _place(self, sequence, plan):
        """Give an admitted sequence a slot, starting from the longest cached prefix of its prompt."""
        candidates = list(self.idle) + [(s.slot, s.cached_ids()) for s in self.running]
        source, length = best_match(sequence.prompt_ids, candidates)
        if source in self.idle and (length == len(self.idle.held(source)) or not self._free_slots):
            self.idle.take(source, length)  # in place: what it holds beyond the match is overwritten
            sequence.slot = source
        else:
            if not self._free_slots:
                self._free(self.idle.evict_oldest(keep=source))
            sequence.slot = self._free_slots.pop(0)
            if length:
                plan.copies.append(Copy(source, sequence.slot, length))
                if source in self.idle:
                    self.idle.touch(source)  # a shared prefix (a system prompt) stays longest
        sequence.read = sequence.reused_tokens = length
        self.idle.record(length)
        # the budget counts what idle slots hold: drop the least recently used until it fits
        while self.reserved_tokens() + self.idle.tokens() > self.max_cache_tokens and len(self.idle):
            self._free(self.idle.evict_oldest())

    def _free(self, slot):
        self._free_slots.append(slot)
        self._free_slots.sort()  # lowest rows first keeps the batch's rows dense

    def admissible(self):
        """How many waiting sequences, from the head of the line, fit now (slots and KV budget).
        Idle slots count as free: their contents give way to a waiting reply."""
        free, reserved, count = len(self._free_slots) + len(self.idle), self.reserved_tokens(), 0
        for sequence in self.waiting:
            if count >= free or reserved + sequence.reserved_tokens > self.max_cache_tokens:
                break  # first come, first served: nobody overtakes the head of the line
            reserved += sequence.reserved_tokens
            count += 1
        return count

    def queue_positions(self):
        """{sequence: place in line} for waiting sequences: 0 for those that start at the next step."""
        admissible = self.admissible()
        return {s: max(0, index + 1 - admissible) for index, s in enumerate(self.waiting)}

    def reserved_tokens(self):
        return sum(s.reserved_tokens for s in self.running)

    def cache_stats(self):
        """Prompt-cache counters (hits, misses, reused_tokens, evictions) and what idle slots hold now."""
        return {**self.idle.stats, "idle_slots": len(self.idle), "idle_tokens": self.idle.tokens()}

    def __len__(self):
        return len(self.waiting) + len(self.running)

    @staticmethod
    def _chunk(plan, sequence, budget):
        length = min(sequence.prompt_tokens - sequence.read, budget)
        plan.prefill.append(Chunk(sequence, sequence.read, length))
        return length
