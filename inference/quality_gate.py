"""Does a faster precision keep the model's quality? A rerunnable gate: each candidate (bf16,
weight-only int8, weight-only int4) against fp32 on the same weights, on the CPU.

    python -m inference.quality_gate [--model default] [--candidates bfloat16,int8,int4] [--out docs/quality-gate.json]

It asks a fixed set of questions with known answers (greedy decoding) and measures the
perplexity of a held-out text. A candidate passes when its perplexity is within 5% of fp32's
and it answers correctly every question fp32 answers correctly.
"""
import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from .config import EngineConfig
from .engine import Engine, load_model
from .sampling import SamplingParams

QUESTIONS = [
    ("What is the capital of France? Answer in one word.", ["paris"]),
    ("What is 7 times 8? Answer with the number only.", ["56"]),
    ("What is the chemical symbol for gold?", ["au"]),
    ("Which Python keyword defines a function?", ["def"]),
    ("How many days are there in a week?", ["7", "seven"]),
    ("What is the largest planet in our solar system?", ["jupiter"]),
    ("Which language is used to style web pages, alongside HTML?", ["css"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What does HTTP stand for?", ["hypertext transfer protocol"]),
    ("At what temperature in Celsius does water boil at sea level?", ["100"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("How do I reverse a list called items in Python? Show one line of code.", ["reverse", "[::-1]", "reversed"]),
]
HELDOUT = Path(__file__).resolve().parent.parent / "docs" / "quality" / "heldout.txt"
MAX_PPL_RATIO = 1.05


def answers(engine):
    results = []
    for question, accepted in QUESTIONS:
        reply = engine.reply([{"role": "user", "content": question}],
                             SamplingParams(temperature=0, max_new_tokens=48))
        results.append({"question": question, "reply": reply,
                        "correct": any(a in reply.lower() for a in accepted)})
    return results


@torch.inference_mode()
def perplexity(model, tokenizer, text, max_tokens=1024):
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :max_tokens]
    loss = model(input_ids=ids, labels=ids).loss
    return math.exp(float(loss))


def evaluate(config):
    started = time.monotonic()
    model, tokenizer, name = load_model(config)
    engine = Engine(model, tokenizer, config, name)
    result = {"name": name, "answers": answers(engine),
              "perplexity": perplexity(model, tokenizer, HELDOUT.read_text())}
    result["correct"] = sum(a["correct"] for a in result["answers"])
    result["seconds"] = round(time.monotonic() - started, 1)
    engine.loop.close()
    return result


# int8 and int4 are weight-only (inference.quantization): fp32 elsewhere, bf16 inside the packed kernels
CANDIDATES = {"bfloat16": {"dtype": "bfloat16"}, "int8": {"quantize": "int8"}, "int4": {"quantize": "int4"}}


def run(config, candidates=tuple(CANDIDATES)):
    base = replace(config, device="cpu", dtype="float32", quantize="none")
    fp32 = evaluate(base)
    report = {"fp32": fp32, "max_perplexity_ratio": MAX_PPL_RATIO, "candidates": {}}
    for name in candidates:
        result = evaluate(replace(base, **CANDIDATES[name]))
        result["regressions"] = [a["question"] for a, b in zip(fp32["answers"], result["answers"])
                                 if a["correct"] and not b["correct"]]
        result["perplexity_ratio"] = round(result["perplexity"] / fp32["perplexity"], 4)
        result["passed"] = result["perplexity_ratio"] <= MAX_PPL_RATIO and not result["regressions"]
        report["candidates"][name] = result
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated: " + ", ".join(CANDIDATES))
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args()
    config = EngineConfig(model=args.model)
    if args.cache_dir:
        config = replace(config, cache_dir=Path(args.cache_dir))
    report = run(config, [c for c in args.candidates.split(",") if c])
    fp32 = report["fp32"]
    print(f"fp32: {fp32['correct']}/{len(QUESTIONS)} answers correct, perplexity {fp32['perplexity']:.3f}")
    for name, r in report["candidates"].items():
        print(f"{name}: {r['correct']}/{len(QUESTIONS)} answers correct, perplexity {r['perplexity']:.3f} "
              f"(ratio {r['perplexity_ratio']:.4f}, limit {MAX_PPL_RATIO}); regressions: {r['regressions'] or 'none'}; "
              f"{'PASSED' if r['passed'] else 'FAILED'}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    raise SystemExit(0 if all(r["passed"] for r in report["candidates"].values()) else 1)


if __name__ == "__main__":
    main()
