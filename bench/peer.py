"""This service beside llama.cpp's llama-server, the CPU peer, on the same model and prompts, in one run.

    python -m bench.peer --llama-server PATH/TO/llama-server     # started here, on the packaged GGUF
    python -m bench.peer --peer-url http://127.0.0.1:8080        # or any OpenAI-compatible server
    [--out docs/benchmark-peer.md] [--skip-peer]

Three workloads, each first on our stack (daphne + Redis + worker, as `make run` serves), then on the
peer, with the same clients (ours over the WebSocket, the peer's over streaming /v1/chat/completions):
- document: a conversation whose first message carries a ~3,400-token document, then four short
  questions about it (greedy, 16 tokens each): time to first token of each turn;
- one user: a short prompt, 48 tokens at temperature 0.7 (the end-of-turn token held off): decode speed;
- eight users at once, the same: aggregate tokens per second and time to first token.
It writes the table (with the ratios the targets are stated in) to --out.
"""
import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from .__main__ import _wait_http, summarise
from .clients import openai_conversation, websocket_conversation
from .stack import ROOT, Stack, free_port

DOCUMENT_CHARS = 13_000  # about 3,400 tokens of the project's README
QUESTIONS = ["What does `make run` start?", "Which variable sets the model?", "How is Redis used?",
             "What does /healthz answer before a worker is ready?"]
SHORT = "Write a short story about a robot who learns to paint."
DOC_TOKENS, STREAM_TOKENS, USERS = 16, 48, 8


def document_turns():
    text = (ROOT / "README.md").read_text()[:DOCUMENT_CHARS]
    return [f"Here is a document:\n\n{text}\n\nSummarise it in one sentence."] + QUESTIONS


async def _gather(n, conversation):
    started = time.perf_counter()
    results = await asyncio.gather(*[conversation() for _ in range(n)])
    return [r for records in results for r in records], time.perf_counter() - started


def run_workloads(conversation, conversation_for_users=None):
    """conversation(turns, max_new_tokens, sampled) -> coroutine of records; the three workloads (the
    users' on conversation_for_users where the peer needs another server for them)."""
    asyncio.run(conversation(["Hi"], 4, False))  # warm-up
    document, _ = asyncio.run(_gather(1, lambda: conversation(document_turns(), DOC_TOKENS, False)))
    conversation = conversation_for_users() if conversation_for_users else conversation
    asyncio.run(conversation(["Hi"], 4, False))
    one, wall_one = asyncio.run(_gather(1, lambda: conversation([SHORT], STREAM_TOKENS, True)))
    many, wall_many = asyncio.run(_gather(USERS, lambda: conversation([SHORT], STREAM_TOKENS, True)))
    return {
        "document_ttft": [round(r["ttft"], 3) for r in document],
        "document_cached_tokens": [r.get("cached_tokens") for r in document],
        "one_user": summarise(one, wall_one),
        "eight_users": summarise(many, wall_many),
    }


def bench_service(workdir):
    stack = Stack(workdir, redis_db=13, CHAT_GUESTS_PER_ADDRESS=1_000_000, CHAT_GUEST_TURNS_PER_ADDRESS=1_000_000,
                  CHAT_MESSAGES_PER_MINUTE=1_000_000, CHAT_MAX_TURNS_IN_FLIGHT=64)
    stack.start_all()
    try:
        def conversation(turns, max_new_tokens, sampled):
            params = {"temperature": 0.7, "min_tokens": max_new_tokens} if sampled else {}
            return websocket_conversation(stack.ws_url, stack.base_url, turns, max_new_tokens, params)
        return run_workloads(conversation)
    finally:
        stack.stop()


def bench_peer(base_url, count_tokens, users_url=None):
    def talking_to(url):
        def conversation(turns, max_new_tokens, sampled):
            params = {"temperature": 0.7, "ignore_eos": True} if sampled else {}
            return openai_conversation(url, "qwen", turns, max_new_tokens, count_tokens, params)
        return conversation
    return run_workloads(talking_to(base_url), (lambda: talking_to(users_url())) if users_url else None)


def start_llama_server(binary, gguf, slots, context):
    """llama-server on the packaged GGUF. Its context is shared among its slots: the document needs one
    slot of ~4,600 tokens; the users 8 x 512 (a much larger context made this build decode about 10x
    slower here, so each workload gets a server sized to it)."""
    port = free_port()
    log = open(Path(tempfile.gettempdir()) / "bench-llama-server.log", "wb")
    command = [binary, "-m", str(gguf), "--alias", "qwen", "-np", str(slots), "-c", str(context),
               "-t", str(os.cpu_count()), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "LD_LIBRARY_PATH": str(Path(binary).parent)})
    _wait_http(f"http://127.0.0.1:{port}/health", server)
    return server, f"http://127.0.0.1:{port}"


def ratios(ours, peer):
    follow_ours = statistics.median(ours["document_ttft"][1:])
    follow_peer = statistics.median(peer["document_ttft"][1:])
    return {
        "follow_up_ttft_median_s": (follow_ours, follow_peer),
        "first_turn_time_ratio": round(ours["document_ttft"][0] / peer["document_ttft"][0], 2),
        "one_user_decode_ratio": round(ours["one_user"]["per_stream_tok_s"] / peer["one_user"]["per_stream_tok_s"], 2),
        "eight_users_aggregate_ratio": round(ours["eight_users"]["aggregate_tok_s"]
                                             / peer["eight_users"]["aggregate_tok_s"], 2),
        "eight_users_ttft_p50_s": (ours["eight_users"]["ttft_p50"], peer["eight_users"]["ttft_p50"]),
    }


def markdown(report):
    ours, peer = report["service"], report.get("peer")
    lines = [f"Measured {report['date']} on {report['machine']}, {report['model']}; this service in "
             f"{report['precision']} ({report['quantize']}), the peer: {report['peer_name']}.", "",
             "| work | this service | peer | ratio |", "| --- | --- | --- | --- |"]

    def row(work, a, b, ratio=""):
        lines.append(f"| {work} | {a} | {b} | {ratio} |")

    p = peer or {"document_ttft": ["–"] * 5, "one_user": {}, "eight_users": {}}
    row("document conversation: TTFT of turn 1 (s)", ours["document_ttft"][0], p["document_ttft"][0],
        report.get("ratios", {}).get("first_turn_time_ratio", ""))
    row("document conversation: TTFT of turns 2-5 (s)", ", ".join(map(str, ours["document_ttft"][1:])),
        ", ".join(map(str, p["document_ttft"][1:])))
    row("one user, 48 tokens: decode tok/s", ours["one_user"]["per_stream_tok_s"],
        p["one_user"].get("per_stream_tok_s", "–"), report.get("ratios", {}).get("one_user_decode_ratio", ""))
    row("8 users: aggregate tok/s", ours["eight_users"]["aggregate_tok_s"], p["eight_users"].get("aggregate_tok_s", "–"),
        report.get("ratios", {}).get("eight_users_aggregate_ratio", ""))
    row("8 users: TTFT p50 (s)", ours["eight_users"]["ttft_p50"], p["eight_users"].get("ttft_p50", "–"))
    lines += ["", f"Cached prompt tokens per document turn (ours): {ours['document_cached_tokens']}", ""]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", help="path of a llama-server binary to start on the packaged GGUF")
    parser.add_argument("--peer-url", help="an OpenAI-compatible server already running")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "peer.md"))
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from transformers import AutoTokenizer

    from chat.engines import engine_config_from_settings
    from inference.device import resolve_device, resolve_dtype
    from inference.packaged_model import assemble_gguf, ensure_converted

    config = engine_config_from_settings()
    model_dir = ensure_converted(settings.CHAT_MODEL_CACHE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
              "model": "Qwen2.5-Coder-0.5B-Instruct (packaged default)",
              "precision": str(resolve_dtype(config.dtype, resolve_device(config.device))).removeprefix("torch."),
              "quantize": config.quantize, "peer_name": args.peer_url or "llama-server (Q4_K_M GGUF)"}
    with tempfile.TemporaryDirectory() as workdir:
        report["service"] = bench_service(workdir)
        print(json.dumps(report["service"], indent=1), flush=True)
        if not args.skip_peer:
            servers, base, users_url = [], args.peer_url, None
            if base is None:
                if not args.llama_server:
                    parser.error("give --llama-server or --peer-url (or --skip-peer)")
                gguf = Path(workdir) / "model.gguf"
                assemble_gguf(gguf)

                def started(slots, context):
                    for server in servers:  # one at a time: the other would take the CPU's memory bandwidth
                        os.killpg(server.pid, 15)
                        server.wait(timeout=30)
                    servers.clear()
                    server, url = start_llama_server(args.llama_server, gguf, slots, context)
                    servers.append(server)
                    return url

                base = started(1, 4608)
                users_url = lambda: started(USERS, USERS * 512)  # noqa: E731
            try:
                report["peer"] = bench_peer(base, lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
                                            users_url)
            finally:
                for server in servers:
                    os.killpg(server.pid, 15)
                    server.wait(timeout=30)
            report["ratios"] = ratios(report["service"], report["peer"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
