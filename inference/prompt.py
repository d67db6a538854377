"""The one place that turns a conversation into prompt tokens."""
from .errors import EngineError


class PromptTooLong(EngineError):
    pass


def build_prompt(tokenizer, messages, *, system=None, context_window, max_new_tokens, sampled=None):
    """Token ids for `messages` (oldest first) under the chat template. The last message is the
    user's, to be answered; or the assistant's after the user's, a reply to be continued (the
    prompt then ends inside that reply, not with a new turn).

    The oldest turns are dropped until prompt + max_new_tokens fits the context window; the
    system prompt and the newest user message (with the reply it continues) are always kept.
    They are dropped in blocks of about half the window, counted from the conversation's first
    turn, so the cut stays where it was while the conversation grows by about that much again:
    each turn's prompt then begins with the previous one's, and the engine reuses its cached
    keys and values (inference.prefix_cache) instead of reading the conversation again.
    `sampled` (inference.prefix_cache.SampledReplies), where given, knows the tokens earlier
    replies were sampled as: they stand in the prompt for their re-tokenized text.
    Returns (ids, dropped_count).
    """
    roles = [m["role"] for m in messages]
    continuing = roles[-2:] == ["user", "assistant"]
    if not messages or (roles[-1] != "user" and not continuing):
        raise EngineError("the conversation must end with a user message (or a reply to continue after it)")
    head = [{"role": "system", "content": system}] if system else []
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    budget = context_window - max_new_tokens
    last = len(turns) - (2 if continuing else 1)  # the newest turns, never dropped, start here
    ids = _render(tokenizer, head + turns, continuing, sampled)
    if len(ids) <= budget:
        return ids, 0
    # Too long: estimate each turn's share from its content's tokens (counted once each) plus an
    # equal share of the template's framing, and render again only where the estimate fits.
    contents = [len(tokenizer.encode(t["content"], add_special_tokens=False)) for t in turns]
    framing = max(0, len(ids) - sum(contents)) / (len(turns) + len(head))
    costs = [n + framing for n in contents]
    start = 0
    for cut in _cut_points(turns, contents, context_window // 2, last):
        if len(ids) - sum(costs[:cut]) > budget:
            continue
        start = cut
        ids = _render(tokenizer, head + turns[cut:], continuing, sampled)
        if len(ids) <= budget:
            return ids, cut
    # No block boundary leaves a prompt that fits (the newest turns nearly fill the window):
    # drop turn by turn from there; an estimate short by a few framing tokens costs one more round.
    total = len(ids) - sum(costs[:start]) if start else float(len(ids))
    while True:
        while total > budget and start < last:
            total -= costs[start]
            start += 1
            while start < last and turns[start]["role"] != "user":  # a reply never opens it
                total -= costs[start]
                start += 1
        ids = _render(tokenizer, head + turns[start:], continuing, sampled)
        if len(ids) <= budget:
            return ids, start
        if start == last:
            raise PromptTooLong(
                f"the message is too long: the prompt needs {len(ids)} tokens but the context "
                f"window leaves {budget} after reserving {max_new_tokens} for the reply"
            )
        total = budget + 1.0  # the estimate was short: drop at least one more turn


def _cut_points(turns, contents, block, last):
    """Where the conversation may be cut: the first user turn after each `block` tokens or so,
    counted from its first turn (so a growing conversation keeps its earlier cut points)."""
    points, run = [], 0
    for index in range(1, last + 1):
        run += contents[index - 1] + 5  # ChatML frames a turn in about 5 tokens
        if run >= block and turns[index]["role"] == "user":
            points.append(index)
            run = 0
    return points


def _render(tokenizer, messages, continuing, sampled=None):
    options = {"continue_final_message": True} if continuing else {"add_generation_prompt": True}
    known = [(m["content"], sampled.get(m["content"])) for m in messages
             if m["role"] == "assistant" and sampled is not None]
    if not any(ids for _, ids in known):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, **options)
        if hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    # Earlier replies go in as the tokens they were sampled as (re-tokenizing their text may give
    # others); the template's text around them is tokenized piece by piece, as it was when each
    # of those replies was generated (its prompt ended just before it).
    text = tokenizer.apply_chat_template(messages, tokenize=False, **options)
    ids, position = [], 0
    for content, sampled_ids in known:
        at = text.find(content, position) if sampled_ids else -1
        if at < 0:
            continue
        ids += _encode(tokenizer, text[position:at]) + list(sampled_ids)
        position = at + len(content)
    return ids + _encode(tokenizer, text[position:])


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
