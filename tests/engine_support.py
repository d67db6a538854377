"""Shared pieces for the engine tests: conversations, engines over the tiny model, waits, and faults."""
import time

from inference import Engine, EngineConfig, engine_loop


def user(text):
    return [{"role": "user", "content": text}]


def engine_with(tiny_engine, **config):
    """The tiny model behind an engine (and scheduler) of its own, with this configuration."""
    return Engine(tiny_engine.model, tiny_engine.tokenizer, EngineConfig(**config), name="tiny")


def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class KilledThread(BaseException):
    """Not an Exception: nothing in the scheduler's loop catches it, so its thread dies."""


def fail_sampling(monkeypatch, seed, after, message):
    """From its (after + 1)-th token on, handling the sampled token fails for the reply with this
    seed: a forced failure of one row of the batch. Every other reply goes on as usual."""
    real_accept = engine_loop.EngineLoop._accept

    def accept(self, reply, token, ok, *args):
        if reply.stream.params.seed == seed and reply.stream.completion_tokens >= after:
            raise RuntimeError(message)
        return real_accept(self, reply, token, ok, *args)

    monkeypatch.setattr(engine_loop.EngineLoop, "_accept", accept)
