"""Time to first token of each turn of the document conversation, on the engine alone.

    python -m bench.prefix_reuse [--dtype bfloat16] [--new-tokens 16] [--out FILE]

A ~3,400-token document with a first question, then four short follow-ups (bench.conversations),
greedy, `--new-tokens` tokens each, one turn after the other as a person chats: each turn's
messages are the conversation so far, as the worker builds them. Prints, and writes as JSON, each
turn's prompt tokens, cached (reused) tokens, time to first token and total time. Runs on whatever
engine code is importable, so the same script measures a checkout without the prompt cache.
"""
import argparse
import json
import platform
import time

import torch

from bench.conversations import DOCUMENT_QUESTIONS
from inference import EngineConfig, SamplingParams, load_engine


def run_conversation(engine, new_tokens):
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens)
    messages, turns = [], []
    for number, question in enumerate(DOCUMENT_QUESTIONS, 1):
        messages.append({"role": "user", "content": question})
        started = time.perf_counter()
        stream = engine.stream_reply(messages, params)
        pieces, first = [], None
        for piece in stream:
            if first is None:
                first = time.perf_counter()
            pieces.append(piece)
        ended = time.perf_counter()
        text = "".join(pieces)
        messages.append({"role": "assistant", "content": text})
        turns.append({"turn": number, "prompt_tokens": stream.prompt_tokens,
                      "cached_tokens": getattr(stream, "cached_tokens", 0),
                      "ttft_s": round((first or ended) - started, 3), "total_s": round(ended - started, 3),
                      "completion_tokens": stream.completion_tokens, "text": text})
        print(f"turn {number}: prompt {stream.prompt_tokens:5d}, cached {turns[-1]['cached_tokens']:5d}, "
              f"TTFT {turns[-1]['ttft_s']:6.2f} s, total {turns[-1]['total_s']:6.2f} s  {text[:50]!r}", flush=True)
    return turns


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    engine = load_engine(EngineConfig(device="cpu", dtype=args.dtype))
    turns = run_conversation(engine, args.new_tokens)
    report = {"model": engine.name, "dtype": args.dtype, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "turns": turns}
    if args.out:
        with open(args.out, "w") as out:
            json.dump(report, out, indent=1)
    engine.loop.close()


if __name__ == "__main__":
    main()
