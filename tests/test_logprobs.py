"""A reply's logprobs in OpenAI's shape (inference.logprobs), from the tiny real model and tokenizer."""
from inference.logprobs import openai_logprobs


def joined(entries):
    return bytes(b for entry in entries for b in entry["bytes"])


def test_each_generated_token_has_its_bytes_logprob_and_the_likeliest_alternatives(tiny_engine):
    stream = tiny_engine.stream_reply([{"role": "user", "content": "Hello there"}],
                                      {"max_new_tokens": 10, "temperature": 0, "logprobs": True, "top_logprobs": 2})
    text = stream.text()
    entries = tiny_engine.logprobs_of(stream, text)
    assert len(entries) == stream.completion_tokens == 10
    assert joined(entries).decode() == text
    for entry in entries:
        assert entry["logprob"] <= 0 and [len(entry["top_logprobs"])] == [2]
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][1]["logprob"]
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy


def test_a_reply_that_did_not_ask_has_none():
    class Stream:
        class params:
            logprobs = False

    from inference.engine import Engine

    assert Engine.logprobs_of(None, Stream(), "text") is None


def test_tokens_beyond_the_text_a_stop_string_cut_get_no_entry():
    table = {1: b"Hel", 2: b"lo", 3: b" STOP", 4: b" more"}
    logprobs = [(-0.1, [(1, -0.1)]), (-0.2, [(2, -0.2)]), (-0.3, [(3, -0.3)]), (-0.4, [(4, -0.4)])]
    entries = openai_logprobs([1, 2, 3, 4], logprobs, table.__getitem__, "Hello")
    assert [e["token"] for e in entries] == ["Hel", "lo"] and entries[1]["top_logprobs"][0]["bytes"] == list(b"lo")


def test_a_token_that_ends_inside_a_character_keeps_its_bytes():
    table = {1: "é".encode()[:1], 2: "é".encode()[1:]}
    entries = openai_logprobs([1, 2], [(-1.0, []), (-1.0, [])], table.__getitem__, "é")
    assert joined(entries).decode() == "é" and entries[0]["token"] == "\ufffd"
