import pytest
from transformers import AutoTokenizer

from inference import EngineError, PromptTooLong, build_prompt


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def conversation(turns):
    messages = []
    for n in range(turns):
        messages.append({"role": "user", "content": f"question number {n} " + "word " * 20})
        messages.append({"role": "assistant", "content": f"answer number {n} " + "word " * 20})
    messages.append({"role": "user", "content": "the newest question"})
    return messages


def test_it_renders_system_prompt_and_every_turn_with_the_chat_template(tokenizer):
    ids, dropped = build_prompt(tokenizer, conversation(2), system="Be brief.", context_window=4096,
                                max_new_tokens=100)
    text = tokenizer.decode(ids)
    assert dropped == 0
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    for part in ["question number 0", "answer number 0", "question number 1", "the newest question"]:
        assert part in text
    assert text.endswith("<|im_start|>assistant\n")


def test_it_drops_the_oldest_turns_to_fit_but_keeps_system_and_newest(tokenizer):
    full, _ = build_prompt(tokenizer, conversation(6), system="Be brief.", context_window=100_000,
                           max_new_tokens=1)
    window, max_new = len(full) // 2, 50
    ids, dropped = build_prompt(tokenizer, conversation(6), system="Be brief.", context_window=window,
                                max_new_tokens=max_new)
    text = tokenizer.decode(ids)
    assert len(ids) + max_new <= window
    assert dropped >= 2
    assert "Be brief." in text and "the newest question" in text
    assert "question number 0" not in text and "question number 5" in text
    # the kept part starts with a user turn, never an orphaned assistant reply
    assert text.split("<|im_start|>")[2].startswith("user")


def test_a_single_message_that_cannot_fit_is_a_clear_error(tokenizer):
    with pytest.raises(PromptTooLong, match="the message is too long"):
        build_prompt(tokenizer, [{"role": "user", "content": "word " * 500}], context_window=200,
                     max_new_tokens=50)


def test_the_conversation_must_end_with_the_user(tokenizer):
    with pytest.raises(EngineError, match="must end with a user message"):
        build_prompt(tokenizer, [{"role": "assistant", "content": "hi"}], context_window=200, max_new_tokens=5)


def test_a_reply_to_continue_leaves_the_prompt_open_inside_it_and_is_kept_when_turns_drop(tokenizer):
    messages = conversation(6) + [{"role": "assistant", "content": "The newest answer, cut"}]
    ids, dropped = build_prompt(tokenizer, messages, context_window=100_000, max_new_tokens=10)
    assert dropped == 0 and tokenizer.decode(ids).endswith("<|im_start|>assistant\nThe newest answer, cut")
    full = len(ids)
    ids, dropped = build_prompt(tokenizer, messages, context_window=full // 2 + 50, max_new_tokens=50)
    text = tokenizer.decode(ids)
    assert dropped >= 2 and text.endswith("the newest question<|im_end|>\n<|im_start|>assistant\nThe newest answer, cut")
    with pytest.raises(EngineError, match="must end with a user message"):  # a reply with no question
        build_prompt(tokenizer, [{"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                     context_window=200, max_new_tokens=5)


def test_a_long_conversation_is_cut_in_a_few_renders_not_one_per_dropped_turn(tokenizer, monkeypatch):
    renders = []
    real = tokenizer.apply_chat_template
    monkeypatch.setattr(tokenizer, "apply_chat_template", lambda *a, **k: renders.append(1) or real(*a, **k))
    ids, dropped = build_prompt(tokenizer, conversation(300), system="Be brief.", context_window=1000,
                                max_new_tokens=100)
    assert len(renders) <= 3
    assert len(ids) <= 900 and dropped > 500
    text = tokenizer.decode(ids)
    assert text.split("<|im_start|>")[2].startswith("user") and "the newest question" in text
    # It cuts in blocks of about half the window (500 tokens here), so it keeps more than the
    # budget less one block: the block before the kept part would not have fitted too.
    assert len(ids) > 900 - 500 - 50


def test_a_growing_conversation_is_cut_in_large_steps_so_each_prompt_begins_with_the_last(tokenizer):
    """Turn after turn in a small window, the prompt mostly begins with the previous prompt and its
    reply (so the engine reuses its cache); the cut moves rarely, and by a block at a time."""
    window, max_new = 1000, 100
    attachment = "\n".join(f"row {n}, value {n * n}" for n in range(40))  # as chat.attachments puts it in front
    messages, previous, breaks, drops = [], None, 0, set()
    for n in range(40):
        content = f"[file data.csv]\n{attachment}\n[end of file]\n\nquestion {n}" if n == 0 else f"question {n}"
        messages.append({"role": "user", "content": content})
        ids, dropped = build_prompt(tokenizer, messages, system="Be brief.", context_window=window,
                                    max_new_tokens=max_new)
        assert len(ids) + max_new <= window
        if previous is not None and ids[: len(previous)] != previous:
            breaks += 1
        drops.add(dropped)
        reply = f"answer {n}: " + "word " * 25
        previous = ids + tokenizer.encode(reply, add_special_tokens=False)
        messages.append({"role": "assistant", "content": reply})
    assert 0 < breaks <= 5 and len(drops) == breaks + 1  # dropped only in a few large steps
