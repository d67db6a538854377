"""The one place that turns a conversation into prompt tokens."""
from .errors import EngineError


class PromptTooLong(EngineError):
    pass


def build_prompt(tokenizer, messages, *, system=None, context_window, max_new_tokens):
    """Token ids for `messages` (oldest first, the last one from the user) under the chat template.

    The oldest turns are dropped until prompt + max_new_tokens fits the context window; the
    system prompt and the newest user message are always kept. Returns (ids, dropped_count).
    """
    if not messages or messages[-1]["role"] != "user":
        raise EngineError("the conversation must end with a user message")
    head = [{"role": "system", "content": system}] if system else []
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    budget = context_window - max_new_tokens
    dropped = 0
    while True:
        ids = _render(tokenizer, head + turns)
        if len(ids) <= budget:
            return ids, dropped
        if len(turns) == 1:
            raise PromptTooLong(
                f"the message is too long: the prompt needs {len(ids)} tokens but the context "
                f"window leaves {budget} after reserving {max_new_tokens} for the reply"
            )
        # Drop the oldest turn, and then any assistant turn that would now open the conversation.
        turns.pop(0)
        dropped += 1
        while len(turns) > 1 and turns[0]["role"] != "user":
            turns.pop(0)
            dropped += 1


def _render(tokenizer, messages):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)
