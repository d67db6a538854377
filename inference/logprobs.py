"""A reply's token log-probabilities in OpenAI's shape (`choices[].logprobs.content`).

The sampler gives each generated token's log-probability and, when asked, the most likely tokens
at that step (inference.sampler); here they become one entry per token of the reply's text:
{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}, where `bytes` are the token's own
UTF-8 bytes and `token` their text (a token that ends inside a character shows U+FFFD, as OpenAI's
do). Tokens past the end of the text (a stop string's, which the text leaves out) get none.
"""


def openai_logprobs(token_ids, logprobs, bytes_of, text):
    """Entries for the generated `token_ids` (with their sampler `logprobs`: (logprob, [(token id,
    logprob)])) that make up `text`; `bytes_of(token id)` gives a token's bytes."""
    entries, length, limit = [], 0, len(text.encode())
    for token_id, (logprob, top) in zip(token_ids, logprobs):
        if length >= limit:
            break
        raw = bytes_of(token_id)
        length += len(raw)
        entries.append({**_entry(raw, logprob),
                        "top_logprobs": [_entry(bytes_of(other), value) for other, value in top]})
    return entries


def _entry(raw, logprob):
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}
