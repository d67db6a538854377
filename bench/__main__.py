"""The benchmark: our service against raw `generate` and `transformers serve`, side by side.

    python -m bench [--levels 1,4,8,16] [--max-new-tokens 48] [--out docs/bench]

It starts the real stack (daphne + Redis + the inference worker, as `make run` does) and
drives it with N concurrent WebSocket clients, each holding a two-turn conversation. In the
same run it measures raw `model.generate` (batch 1 and batch N, no server) and
`transformers serve --continuous-batching` driven by the same clients over HTTP streaming,
then prints and writes the table with the ratios the targets are stated in.
"""
import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .clients import openai_conversation, websocket_conversation
from .conversations import CONVERSATIONS
from .stack import ROOT, Stack, free_port


def summarise(records, wall_seconds):
    ttfts = sorted(r["ttft"] for r in records)
    per_stream = [(r["tokens"] - 1) / r["stream_seconds"] for r in records if r["tokens"] > 1 and r["stream_seconds"] > 0]
    tokens = sum(r["tokens"] for r in records)
    return {
        "turns": len(records), "tokens": tokens, "wall_seconds": round(wall_seconds, 2),
        "aggregate_tok_s": round(tokens / wall_seconds, 2),
        "per_stream_tok_s": round(statistics.median(per_stream), 2) if per_stream else 0.0,
        "ttft_p50": round(_percentile(ttfts, 50), 3), "ttft_p95": round(_percentile(ttfts, 95), 3),
        "finish_reasons": {k: sum(r["finish_reason"] == k for r in records) for k in {r["finish_reason"] for r in records}},
    }


def _percentile(values, q):
    if not values:
        return 0.0
    k = (len(values) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (k - low)


async def drive(level, conversation_fn):
    """N clients at once, each holding its own conversation; returns (records, wall seconds)."""
    started = time.perf_counter()
    results = await asyncio.gather(*[conversation_fn(CONVERSATIONS[i % len(CONVERSATIONS)]) for i in range(level)])
    return [r for records in results for r in records], time.perf_counter() - started


def bench_service(levels, max_new_tokens, workdir, env):
    stack = Stack(workdir, redis_db=12, **env)
    stack.start_all()
    try:
        def one(turns):
            return websocket_conversation(stack.ws_url, stack.base_url, turns, max_new_tokens)
        asyncio.run(drive(1, lambda turns: websocket_conversation(stack.ws_url, stack.base_url, turns[:1], 8)))
        results, replies = {}, []
        for level in levels:
            records, wall = asyncio.run(drive(level, one))
            results[level] = summarise(records, wall)
            replies += [r["reply"] for r in records]
            print(f"service   N={level:<3} {_line(results[level])}", flush=True)
        results["stored"] = _check_stored(stack, replies)
        return results
    finally:
        stack.stop()


def _check_stored(stack, reply_ids):
    """Every reply of the benchmark ended with done and is stored with its final state."""
    import sqlite3

    with sqlite3.connect(stack.db_path) as db:
        rows = dict(db.execute(
            f"SELECT id, finish_reason FROM chat_message WHERE id IN ({','.join('?' * len(reply_ids))})", reply_ids))
    return {"replies": len(reply_ids), "stored_final": sum(1 for i in reply_ids if rows.get(i) in ("stop", "length"))}


def bench_serve(levels, max_new_tokens, model_dir, tokenizer, precision):
    port = free_port()
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir), "--continuous-batching",
               "--port", str(port), "--host", "127.0.0.1", "--device", "cpu", "--dtype", precision]
    log = open(Path(tempfile.gettempdir()) / "bench-transformers-serve.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(base + "/health", server)

        def count(text):
            return len(tokenizer.encode(text, add_special_tokens=False))

        def one(turns):
            return openai_conversation(base, str(model_dir), turns, max_new_tokens, count)
        asyncio.run(drive(1, lambda turns: openai_conversation(base, str(model_dir), turns[:1], 8, count)))
        results = {}
        for level in levels:
            records, wall = asyncio.run(drive(level, one))
            results[level] = summarise(records, wall)
            print(f"tf-serve  N={level:<3} {_line(results[level])}", flush=True)
        return results
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _wait_http(url, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


def bench_raw(levels, max_new_tokens, model, tokenizer):
    """Raw model.generate, greedy, fixed length, on each conversation's first turn."""
    import torch

    tokenizer.padding_side = "left"
    results = {}
    for level in sorted({1, *levels}):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": CONVERSATIONS[i % len(CONVERSATIONS)][0]}],
                                                 add_generation_prompt=True, tokenize=False) for i in range(level)]
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=2, do_sample=False)  # warm-up
            started = time.perf_counter()
            model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)
            wall = time.perf_counter() - started
        results[level] = {"aggregate_tok_s": round(level * max_new_tokens / wall, 2),
                          "per_stream_tok_s": round(max_new_tokens / wall, 2), "wall_seconds": round(wall, 2)}
        print(f"raw       N={level:<3} aggregate {results[level]['aggregate_tok_s']} tok/s", flush=True)
    return results


def _line(r):
    return (f"ttft p50 {r['ttft_p50']:.2f}s p95 {r['ttft_p95']:.2f}s  per-stream {r['per_stream_tok_s']:.2f} tok/s  "
            f"aggregate {r['aggregate_tok_s']:.2f} tok/s  ({r['turns']} turns, {r['tokens']} tokens)")


def ratios(report):
    service, raw, serve = report["service"], report["raw"], report.get("transformers_serve", {})
    one, eight = service.get(1), service.get(8)
    out = {}
    if one and 1 in raw:
        out["overhead: service N=1 per-stream / raw generate batch 1 (target >= 0.9)"] = one["per_stream_tok_s"] / raw[1]["per_stream_tok_s"]
    if one and eight:
        out["batching: service N=8 aggregate / service N=1 (target >= 3)"] = eight["aggregate_tok_s"] / one["aggregate_tok_s"]
    if eight and serve.get(8):
        out["peers: service N=8 aggregate / transformers serve N=8 (target >= 1.5)"] = eight["aggregate_tok_s"] / serve[8]["aggregate_tok_s"]
        out["peers: service N=8 ttft p50 / transformers serve N=8 (target <= 1)"] = eight["ttft_p50"] / serve[8]["ttft_p50"]
    sixteen = service.get(16)
    if sixteen and 16 in raw:
        out["static batch: service N=16 aggregate / raw generate batch 16 (target >= 0.9)"] = sixteen["aggregate_tok_s"] / raw[16]["aggregate_tok_s"]
    if sixteen:
        out["fairness: service N=16 ttft p95 / ttft p50 (target <= 2)"] = sixteen["ttft_p95"] / sixteen["ttft_p50"]
    return {k: round(v, 3) for k, v in out.items()}


def markdown(report):
    lines = [f"Run {report['date']} on {report['machine']}; model {report['model']}, precision {report['precision']}, "
             f"{report['max_new_tokens']} new tokens per turn, two turns per client.", "",
             "| system | N | ttft p50 (s) | ttft p95 (s) | per-stream tok/s | aggregate tok/s |", "|---|---|---|---|---|---|"]
    for name, key in [("this service (WebSocket)", "service"), ("transformers serve --continuous-batching", "transformers_serve")]:
        for level, r in report.get(key, {}).items():
            if isinstance(r, dict) and "ttft_p50" in r:
                lines.append(f"| {name} | {level} | {r['ttft_p50']:.2f} | {r['ttft_p95']:.2f} | {r['per_stream_tok_s']:.2f} | {r['aggregate_tok_s']:.2f} |")
    for level, r in report["raw"].items():
        lines.append(f"| raw model.generate (no server) | {level} | – | – | {r['per_stream_tok_s']:.2f} | {r['aggregate_tok_s']:.2f} |")
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report["ratios"].items()]
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, key, style in [("this service", "service", "o-"), ("transformers serve (CB)", "transformers_serve", "s--"),
                             ("raw generate", "raw", "^:")]:
        rows = {int(k): v for k, v in report.get(key, {}).items() if isinstance(v, dict) and "aggregate_tok_s" in v}
        if rows:
            levels = sorted(rows)
            left.plot(levels, [rows[n]["aggregate_tok_s"] for n in levels], style, label=name)
            if key != "raw":
                right.plot(levels, [rows[n]["ttft_p50"] for n in levels], style, label=name)
    left.set(xlabel="concurrent clients", ylabel="aggregate tokens/s", title="Throughput")
    right.set(xlabel="concurrent clients", ylabel="time to first token p50 (s)", title="Latency")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(f"{report['model']} on {report['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench"))
    parser.add_argument("--skip-serve", action="store_true", help="leave out transformers serve")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from django.conf import settings

    from chat.engines import engine_config_from_settings
    from inference import load_model
    from inference.device import resolve_device, resolve_dtype
    from inference.packaged_model import ensure_converted

    config = engine_config_from_settings()
    model_dir = ensure_converted(settings.CHAT_MODEL_CACHE)
    # every system runs in the precision the service picks here (bf16 where the CPU has it natively)
    precision = str(resolve_dtype(config.dtype, resolve_device(config.device))).removeprefix("torch.")
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
              "model": "Qwen2.5-Coder-0.5B-Instruct (packaged default)", "precision": precision,
              "max_new_tokens": args.max_new_tokens, "levels": levels}
    with tempfile.TemporaryDirectory() as workdir:
        # every simulated user is a guest from 127.0.0.1: lift the per-address guest limits
        report["service"] = bench_service(levels, args.max_new_tokens, workdir, {
            "CHAT_GUESTS_PER_ADDRESS": 1_000_000, "CHAT_GUEST_TURNS_PER_ADDRESS": 1_000_000})
    model, tokenizer, _ = load_model(config)
    report["raw"] = bench_raw(levels, args.max_new_tokens, model, tokenizer)
    del model
    if not args.skip_serve:
        report["transformers_serve"] = bench_serve(levels, args.max_new_tokens, model_dir, tokenizer, precision)
    report["ratios"] = ratios(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report))
    plot(report, out / "throughput.png")
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
