"""Clients that hold a conversation and time each reply: over our WebSocket, or over the
OpenAI-compatible HTTP streaming API of `transformers serve`."""
import asyncio
import json
import time

import httpx
import websockets


async def websocket_conversation(ws_url, origin, turns, max_new_tokens, params=None):
    """One client on our service; returns a record per turn (greedy unless `params` say otherwise)."""
    params = {"temperature": 0, **(params or {}), "max_new_tokens": max_new_tokens}
    records = []
    async with websockets.connect(ws_url, origin=origin, max_size=None) as socket:
        conversation = None
        for content in turns:
            sent = time.perf_counter()
            await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": content,
                                          "params": params}))
            first = None
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 900))
                if frame["type"] == "ack":
                    conversation = frame["conversation"]
                elif frame["type"] == "token" and first is None:
                    first = time.perf_counter()
                elif frame["type"] == "error" and frame["code"] != "no_worker":
                    raise RuntimeError(f"turn refused: {frame}")
                elif frame["type"] == "done":
                    records.append(_record(sent, first, time.perf_counter(), frame["usage"]["completion_tokens"],
                                           frame["finish_reason"], conversation=conversation, reply=frame["message"],
                                           cached_tokens=frame["usage"].get("cached_tokens")))
                    break
    return records


async def openai_conversation(base_url, model, turns, max_new_tokens, count_tokens, params=None):
    """One client on an OpenAI-compatible server (streaming chat completions; greedy unless `params`
    say otherwise)."""
    records, messages = [], []
    async with httpx.AsyncClient(timeout=900) as client:
        for content in turns:
            messages.append({"role": "user", "content": content})
            sent, first, text, finish = time.perf_counter(), None, [], None
            body = {"model": model, "messages": messages, "stream": True, "max_tokens": max_new_tokens,
                    "temperature": 0, **(params or {})}
            async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    for choice in chunk.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            first = first or time.perf_counter()
                            text.append(piece)
                        finish = choice.get("finish_reason") or finish
            reply = "".join(text)
            messages.append({"role": "assistant", "content": reply})
            records.append(_record(sent, first, time.perf_counter(), count_tokens(reply), finish or "stop"))
    return records


def _record(sent, first, done, tokens, finish_reason, **extra):
    first = first or done
    return {"ttft": first - sent, "tokens": tokens, "stream_seconds": done - first, "total_seconds": done - sent,
            "finish_reason": finish_reason, **extra}
