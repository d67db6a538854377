class IncrementalDetokenizer:
    """Turns a growing list of token ids into text pieces that never split a character.

    Byte-level tokenizers can end a token in the middle of a UTF-8 sequence; decoding then
    yields U+FFFD. We hold such tokens back until the character completes (the approach of
    text-generation-inference's decode_token), decoding only a short window each time.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, token_id):
        """Append one token; return the text it completes ('' while a character is pending)."""
        self.tokens.append(token_id)
        prefix_text = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self):
        """Whatever is still held back when the reply ends (an unfinished character stays U+FFFD)."""
        prefix_text = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.tokens)
        return new_text[len(prefix_text) :]

    def _decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
