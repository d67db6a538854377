"""The sampler's cost with every control on versus none, and a JSON-schema reply's speed versus a free one.

    python -m bench.sampler [--rows 16] [--steps 50] [--vocab 151936]

Part one times sample_step alone on random logits of the packaged model's vocabulary: plain rows
(temperature, top-p, seed) against rows that also use top-k, min-p, logit_bias, min_tokens bans,
repetition/presence/frequency penalties (with their counts) and logprobs. Part two generates with the
packaged model (as the service loads it) one reply under a JSON schema and one free, and compares
their tokens per second.
"""
import argparse
import json
import statistics
import time

import torch

from inference.sampler import Row, TokenCounts, sample_step
from inference.sampling import SamplingParams

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "languages": {"type": "array", "items": {"type": "string"}},
    "years": {"type": "integer", "minimum": 0, "maximum": 60}}, "required": ["name", "languages", "years"]}


def time_steps(rows, logits, counts, steps):
    """The median step; each run starts its replies afresh (the same logits step after step would
    otherwise pile up counts no real reply reaches)."""
    prompt = torch.randint(0, logits.shape[-1], (512,), generator=torch.Generator().manual_seed(1)).tolist()
    for slot in range(len(rows)):
        counts.start(slot, prompt)
    timings = []
    for _ in range(steps):
        started = time.perf_counter()
        sample_step(logits, rows, counts)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def bench_sampler(rows, steps, vocab):
    torch.manual_seed(0)
    # a language model's logits are peaked: a few dozen likely tokens over a long flat tail
    logits = torch.randn(rows, vocab) * 2
    logits.scatter_add_(1, torch.randint(0, vocab, (rows, 64)), torch.full((rows, 64), 9.0))
    counts = TokenCounts(rows, vocab, torch.device("cpu"))
    plain = [Row(SamplingParams(temperature=0.7, top_p=0.95, seed=i), torch.Generator().manual_seed(i)) for i in range(rows)]
    def full(**cuts):
        return [Row(SamplingParams(temperature=0.7, repetition_penalty=1.1, presence_penalty=0.3,
                                   frequency_penalty=0.2, logit_bias={13: -5.0, 42: 2.0}, logprobs=True,
                                   top_logprobs=5, seed=i, **cuts),
                    torch.Generator().manual_seed(i), slot=i, banned=(151643, 151645)) for i in range(rows)]
    time_steps(plain, logits, counts, 5)
    off = time_steps(plain, logits, counts, steps)
    on = time_steps(full(top_p=0.95), logits, counts, steps)  # the same cut as the plain rows
    with_cuts = time_steps(full(top_p=0.8, top_k=20, min_p=0.05), logits, counts, steps)  # the model's defaults
    return {"rows": rows, "vocab": vocab, "plain_ms": round(off, 2), "all_controls_ms": round(on, 2),
            "ratio": round(on / off, 2), "all_controls_top_k_min_p_ms": round(with_cuts, 2)}


def bench_json(max_new_tokens):
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from chat.engines import engine_config_from_settings
    from inference import load_engine

    engine = load_engine(engine_config_from_settings())
    messages = [{"role": "user", "content": "Describe a programmer as JSON with name, languages and years."}]
    results = {}
    for label, structure in (("free", None), ("json_schema", {"type": "json_schema", "schema": SCHEMA})):
        engine.reply(messages, SamplingParams(temperature=0, max_new_tokens=4, structure=structure))  # warm-up
        stream = engine.stream_reply(messages, SamplingParams(temperature=0, max_new_tokens=max_new_tokens,
                                                              structure=structure))
        first = started = time.perf_counter()
        for index, _ in enumerate(stream):
            if index == 0:
                first = time.perf_counter()
        ended = time.perf_counter()
        rate = (stream.completion_tokens - 1) / (ended - first) if stream.completion_tokens > 1 else 0.0
        results[label] = {"tokens": stream.completion_tokens, "tok_s": round(rate, 2),
                          "ttft_s": round(first - started, 3), "finish_reason": stream.finish_reason}
    results["ratio"] = round(results["json_schema"]["tok_s"] / results["free"]["tok_s"], 2)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    report = {"sampler": bench_sampler(args.rows, args.steps, args.vocab)}
    print(json.dumps(report["sampler"]), flush=True)
    if not args.skip_model:
        report["json"] = bench_json(args.max_new_tokens)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
