"""The engine alone (no Redis, no Django) against raw `generate` and transformers' `generate_batch`.

    python -m bench.engine [--levels 1,8,32,64,128] [--prompt-tokens 96] [--new-tokens 128]
                           [--modes greedy,sampled] [--device auto] [--quantize none] [--model-dir DIR] [--out FILE]

N requests with prompts of `--prompt-tokens` tokens arrive at once; each generates exactly
`--new-tokens` tokens (end-of-turn is ignored). For every N and mode it measures, in the
same run, this engine (scheduling, packed forwards and batched sampling included), raw
`model.generate` with a static batch of N, and `generate_batch` (transformers' continuous
batching), and prints a JSON report and a table.

The weights are the converted default model's when they are in the model cache; otherwise
(a GPU machine that has only the repository and the model's config and tokenizer, e.g.
`--model-dir .gpu/model`) the same architecture is built with random weights: the shapes,
and so the speed, are the same; the text is noise.
"""
import argparse
import copy
import json
import platform
import statistics
import threading
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from inference import Engine, EngineConfig, SamplingParams
from inference.device import resolve_device, resolve_dtype
from inference.generation import ReplyStream
from inference.quantization import quantize_weights, resolve_quantize

SAMPLED = {"temperature": 0.7, "top_p": 0.95}


def load(model_dir, device, dtype):
    """(model, tokenizer, weights) with weights 'converted' or 'random'."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if any(model_dir.glob("*.safetensors")):
        model, weights = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa"), "converted"
    else:
        config = AutoConfig.from_pretrained(model_dir)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
        weights = "random"
    for source in (model.config, model.generation_config):  # generate exactly --new-tokens tokens
        source.eos_token_id = None
    return model.to(device).eval(), tokenizer, weights


def default_model_dir():
    found = sorted((Path.home() / ".cache" / "chatsite" / "models").glob("*/config.json"))
    if not found:
        raise SystemExit("no converted default model: run `python manage.py prepare_model`, or pass --model-dir")
    return found[0].parent


def prompts(count, length, vocab):
    generator = torch.Generator().manual_seed(count)
    return torch.randint(100, vocab - 100, (count, length), generator=generator).tolist()


def params_for(mode, new_tokens):
    values = SAMPLED if mode == "sampled" else {"temperature": 0.0}
    return SamplingParams(max_new_tokens=new_tokens, **values)


def run_engine(engine, batch, mode, new_tokens):
    streams = [ReplyStream(ids, params_for(mode, new_tokens)) for ids in batch]
    first_token, threads = [None] * len(streams), []
    timings_before = dict(engine.loop.timings)
    started = time.perf_counter()

    def read(index, stream):
        for _ in stream:
            if first_token[index] is None:
                first_token[index] = time.perf_counter() - started

    for index, stream in enumerate(streams):
        engine.loop.submit(stream)
        threads.append(threading.Thread(target=read, args=(index, stream)))
        threads[-1].start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    tokens = sum(s.completion_tokens for s in streams)
    assert tokens == len(batch) * new_tokens, f"expected {len(batch) * new_tokens} tokens, got {tokens}"
    ttfts = sorted(t for t in first_token if t is not None)
    # where a step's time went, in ms per step (schedule, forward, sample, stream: the loop's own timings)
    steps = engine.loop.timings["steps"] - timings_before["steps"]
    step_ms = {key.removesuffix("_s"): round((engine.loop.timings[key] - timings_before[key]) / steps * 1e3, 3)
               for key in ("schedule_s", "forward_s", "sample_s", "stream_s")}
    return {"tok_s": round(tokens / wall, 1), "wall_s": round(wall, 3),
            "ttft_p50_s": round(statistics.median(ttfts), 3), "ttft_p95_s": round(_percentile(ttfts, 95), 3),
            "ttft_max_s": round(ttfts[-1], 3), "steps": steps, "step_ms": step_ms}


def run_generate(model, batch, mode, new_tokens):
    ids = torch.tensor(batch, device=model.device)
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=mode == "sampled",
                              **(SAMPLED if mode == "sampled" else {}), pad_token_id=0)
    _sync(model.device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    _sync(model.device)
    wall = time.perf_counter() - started
    tokens = (out.shape[1] - ids.shape[1]) * len(batch)
    return {"tok_s": round(tokens / wall, 1), "wall_s": round(wall, 3)}


def run_generate_batch(model, batch, mode, new_tokens):
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=mode == "sampled", pad_token_id=0,
                              **(SAMPLED if mode == "sampled" else {}))
    _sync(model.device)
    started = time.perf_counter()
    outputs = model.generate_batch(inputs=batch, generation_config=config)  # its own thread and no-grad mode
    _sync(model.device)
    wall = time.perf_counter() - started
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    if tokens < len(batch) * new_tokens:
        raise RuntimeError(f"generate_batch made {tokens} of {len(batch) * new_tokens} tokens")
    return {"tok_s": round(tokens / wall, 1), "wall_s": round(wall, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,8,32,64,128")
    parser.add_argument("--prompt-tokens", type=int, default=96)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--modes", default="greedy,sampled")
    parser.add_argument("--systems", default="engine,generate,generate_batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantize", default="none", help="the engine's weights: none, int8, int4, auto "
                        "(generate and generate_batch keep the unquantized model)")
    parser.add_argument("--prefill-tokens", type=int, default=None,
                        help="prompt tokens read per engine step (default: 8192 on a GPU, the engine's default on the CPU)")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    systems = args.systems.split(",")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer, weights = load(args.model_dir or default_model_dir(), device, dtype)
    quantize = resolve_quantize(args.quantize, device)
    # transformers' own attention, untouched by the engine's
    baseline = copy.deepcopy(model) if set(systems) - {"engine"} else None
    if quantize != "none":
        quantize_weights(model, quantize)
    prefill = args.prefill_tokens or (8192 if device.type == "cuda" else EngineConfig.prefill_chunk_tokens)
    engine = Engine(model, tokenizer, EngineConfig(
        device=str(device), max_batch_size=max(levels), prefill_chunk_tokens=prefill,
        max_cache_tokens=max(levels) * (args.prompt_tokens + args.new_tokens)), name="bench")
    engine.loop.stop_token_ids = frozenset()  # random weights make noise: generate exactly --new-tokens
    report = {"device": str(device), "device_name": _device_name(device), "dtype": str(dtype).removeprefix("torch."),
              "quantize": quantize, "weights": weights, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "transformers": __import__("transformers").__version__, "prompt_tokens": args.prompt_tokens,
              "new_tokens": args.new_tokens, "prefill_tokens_per_step": prefill,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "results": []}
    runners = {"engine": lambda b, m: run_engine(engine, b, m, args.new_tokens),
               "generate": lambda b, m: run_generate(baseline, b, m, args.new_tokens),
               "generate_batch": lambda b, m: run_generate_batch(baseline, b, m, args.new_tokens)}
    vocab = model.config.get_text_config().vocab_size
    for system in systems:  # warm-up: allocation, kernels, graphs (not measured)
        _try(runners[system], prompts(2, args.prompt_tokens, vocab), "greedy")
    for n in levels:
        batch = prompts(n, args.prompt_tokens, vocab)
        for mode in args.modes.split(","):
            for system in systems:
                result = {"system": system, "n": n, "mode": mode, **_try(runners[system], batch, mode)}
                report["results"].append(result)
                print(json.dumps(result), flush=True)
    report["engine_timings"] = engine.loop.timings
    engine.loop.close()
    print(json.dumps(report, indent=2))
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def table(report):
    rows = ["| N | mode | system | agg tok/s | TTFT p50 / p95 / max (s) |", "|---|---|---|---|---|"]
    for r in report["results"]:
        ttft = f"{r['ttft_p50_s']} / {r['ttft_p95_s']} / {r['ttft_max_s']}" if "ttft_p50_s" in r else "–"
        rows.append(f"| {r['n']} | {r['mode']} | {r['system']} | {r.get('tok_s', r.get('error'))} | {ttft} |")
    return "\n".join(rows)


def _try(runner, batch, mode):
    try:
        return runner(batch, mode)
    except Exception as exc:  # one system failing (say, generate_batch on this device) must not lose the others
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"


def _percentile(values, pct):
    return values[min(len(values) - 1, int(round(pct / 100 * (len(values) - 1))))]


if __name__ == "__main__":
    main()
