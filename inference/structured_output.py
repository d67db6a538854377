"""Replies that must be JSON (OpenAI's `response_format`): a token mask per reply, from llguidance.

llguidance compiles a JSON schema into a grammar and, at each step, tells which tokens may come
next; the sampler gives every other token no chance (inference.sampler, Row.allowed). The mask
allows the end-of-turn token only once the JSON is complete, so the reply ends there and always
parses and follows the schema (unless it runs out of tokens first: finish_reason `length`).

The tokenizer's llguidance form takes a few seconds to build: it is built once per engine, the
first time a reply asks for structure, in the caller's thread (never in the engine's loop).
"""
import json
import threading

import torch

from .sampling import InvalidParameters, schema_of
from .tool_calls import CLOSE, OPEN, tool_call_grammar, with_json_layout

# byte value -> its 8 bits, lowest first: a little-endian int32 bitmask read as bytes, looked up here,
# is the token mask in token order (one gather instead of shifting every word 32 times)
_BYTE_BITS = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).bool()


class StructuredOutput:
    """One engine's grammar compiler: matchers for replies that ask for a structure."""

    def __init__(self, tokenizer, vocab_size):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._ll_tokenizer = None
        self._lock = threading.Lock()

    def matcher(self, structure):
        """A new GrammarMatcher for one reply; InvalidParameters if the schema cannot be compiled."""
        import llguidance

        schema = schema_of(structure)
        if schema is None:  # a reply of tool calls, between the tokenizer's own tag tokens where it has them
            grammar = llguidance.LLMatcher.grammar_from_lark(tool_call_grammar(
                structure["tools"], structure.get("name"), self._token_id(OPEN), self._token_id(CLOSE)))
        else:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(with_json_layout(schema)))
        matcher = llguidance.LLMatcher(self._tokenizer(), grammar)
        if matcher.is_error():
            raise InvalidParameters(f"the JSON schema cannot be used: {matcher.get_error()[:300]}")
        return GrammarMatcher(matcher, self.vocab_size)

    def _token_id(self, text):
        """The id of `text` when the tokenizer has it as one token, else None."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def _tokenizer(self):
        with self._lock:
            if self._ll_tokenizer is None:
                import llguidance.hf

                self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
            return self._ll_tokenizer


class GrammarMatcher:
    """Where one reply stands in its grammar."""

    def __init__(self, matcher, vocab_size):
        import llguidance.torch

        self._matcher, self.vocab_size = matcher, vocab_size
        self._fill = llguidance.torch.fill_next_token_bitmask
        self._bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)

    def allowed(self, device):
        """A [vocab] bool tensor: the tokens the grammar lets come next."""
        self._fill(self._matcher, self._bitmask, 0)
        unpacked = _BYTE_BITS[self._bitmask[0].view(torch.uint8).long()].reshape(-1)[: self.vocab_size]
        return unpacked.to(device, non_blocking=True)

    def accept(self, token):
        """Advance past a sampled token (one the mask allowed)."""
        if not self._matcher.consume_token(token):
            raise InvalidParameters(f"the grammar refused a token: {self._matcher.get_error()[:200]}")
