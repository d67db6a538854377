"""Prompt caching per cache slot: which slot's keys and values a new reply can start from.

A slot that served a reply keeps that reply's keys and values when it ends (its prompt and the
tokens it generated), together with the token ids they belong to: the slot is then *idle*. A new
reply whose prompt begins with the same tokens (the next turn of a conversation, a regenerate, an
edit, a shared system prompt) starts from the longest such prefix instead of reading it again.
This module keeps the idle slots in least-recently-used order and finds the best match; the
scheduler decides with it (inference.scheduler). No torch here.
"""
import collections
import os
import threading


def common_prefix(a, b):
    """How many leading tokens the sequences `a` and `b` share."""
    # os.path.commonprefix compares any two sequences element-wise (lists of ids as well as strings)
    return len(os.path.commonprefix([a, b]))


class IdleSlots:
    """Slots whose contents outlive their reply, oldest use first, with what each holds."""

    def __init__(self):
        self._held = collections.OrderedDict()  # slot -> token ids whose keys/values it holds
        self.stats = {"hits": 0, "misses": 0, "reused_tokens": 0, "evictions": 0}

    def keep(self, slot, token_ids):
        self._held[slot] = list(token_ids)
        self._held.move_to_end(slot)

    def touch(self, slot):
        """Mark an idle slot as just used (its prefix was copied for a new reply)."""
        self._held.move_to_end(slot)

    def take(self, slot, reused):
        """Hand an idle slot over to a new reply that reuses its first `reused` tokens; whatever it
        held beyond them is lost (counted as an eviction)."""
        if len(self._held.pop(slot)) > reused:
            self.stats["evictions"] += 1

    def evict_oldest(self, keep=None):
        """Drop the least recently used slot's contents (never `keep`); its number, or None if none."""
        for slot in self._held:
            if slot != keep:
                del self._held[slot]
                self.stats["evictions"] += 1
                return slot
        return None

    def held(self, slot):
        return self._held[slot]

    def tokens(self):
        return sum(len(ids) for ids in self._held.values())

    def __contains__(self, slot):
        return slot in self._held

    def __len__(self):
        return len(self._held)

    def __iter__(self):
        return iter(list(self._held.items()))

    def record(self, reused):
        self.stats["hits" if reused else "misses"] += 1
        self.stats["reused_tokens"] += reused


def best_match(prompt_ids, candidates):
    """(slot, length) of the candidate (slot, token ids) sharing the longest prefix with the prompt,
    at most len(prompt_ids) - 1 (one prompt token is always read: its logits give the first token).
    (None, 0) when none shares a token."""
    best, best_length = None, 0
    limit = len(prompt_ids) - 1
    for slot, token_ids in candidates:
        length = min(limit, common_prefix(prompt_ids, token_ids))
        if length > best_length:
            best, best_length = slot, length
    return best, best_length


class SampledReplies:
    """The token ids each recent reply was sampled as, by its text (thread-safe, least recently
    used dropped first). Re-tokenizing a reply's text does not always give the tokens the model
    sampled; the next turn's prompt puts these back (inference.prompt), so that it still begins
    with the keys and values its conversation's slot holds."""

    def __init__(self, size=1024):
        self.size = size
        self._ids = collections.OrderedDict()
        self._lock = threading.Lock()

    def remember(self, text, token_ids):
        if not text or not token_ids:
            return
        with self._lock:
            self._ids[text] = tuple(token_ids)
            self._ids.move_to_end(text)
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def get(self, text):
        with self._lock:
            ids = self._ids.get(text)
            if ids is not None:
                self._ids.move_to_end(text)
            return ids
