import os
from dataclasses import replace

import torch

from transformers import AutoModelForCausalLM, AutoTokenizer

from . import packaged_model
from .config import DEFAULT_MODEL, EngineConfig
from .device import resolve_device, resolve_dtype
from .engine_loop import EngineLoop
from .errors import EngineError
from .generation import ReplyStream
from .logprobs import openai_logprobs
from .prompt import build_prompt
from .quantization import quantize_weights, resolve_quantize
from .sampling import SamplingParams, model_defaults, reply_request
from .structured_output import StructuredOutput


def load_model(config):
    """Load the configured model and tokenizer, pinned to one device and dtype, in eval mode."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    quantize = resolve_quantize(config.quantize, device)
    if config.model == DEFAULT_MODEL:
        source, name = packaged_model.ensure_converted(config.cache_dir), packaged_model.NAME
    else:
        source = name = config.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="sdpa")
    except (OSError, ValueError) as exc:
        raise EngineError(f"could not load model {config.model!r}: {exc}") from exc
    if tokenizer.chat_template is None:
        raise EngineError(f"model {config.model!r} has no chat template; use a chat/instruct model")
    model = model.to(device).eval()
    if device.type == "cpu":  # one thread per core this process may use (a container may allow fewer)
        torch.set_num_threads(min(torch.get_num_threads(), len(os.sched_getaffinity(0))))
    if quantize != "none":  # the name stays the model's (workers are routed by it); the precision says int8
        quantize_weights(model, quantize)
        model.quantized = quantize
    return model, tokenizer, name


class Engine:
    """A loaded model that turns conversations into streamed replies."""

    def __init__(self, model, tokenizer, config=None, name=None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        self.name = name or getattr(model.config, "name_or_path", "model")
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        # what its weights are read as: the dtype, or the weight-only integers replacing its Linear layers
        self.precision = getattr(model, "quantized", None) or str(self.dtype).removeprefix("torch.")
        model_window = getattr(model.config, "max_position_embeddings", None) or 2048
        self.context_window = min(self.config.context_window or model_window, model_window)
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.vocab_size = text_config.vocab_size
        # what the model recommends (its generation_config.json), where a request sets nothing
        self.sampling_defaults = model_defaults(getattr(model, "generation_config", None))
        self.structured_output = StructuredOutput(tokenizer, self.vocab_size)
        self.loop = EngineLoop(
            model, tokenizer, self.stop_token_ids, max_batch_size=self.config.max_batch_size,
            max_cache_tokens=self.config.max_cache_tokens, prefill_chunk_tokens=self.config.prefill_chunk_tokens,
            slot_tokens=self.context_window, vocab_size=self.vocab_size, cuda_graphs=self.config.cuda_graphs,
        )

    def params(self, **values):
        """Validated SamplingParams (defaults for anything not given)."""
        return SamplingParams.from_dict(values, self.config.max_new_tokens_limit)

    def stream_reply(self, messages, params=None, system=None):
        """Start a reply to `messages` ([{role, content}], ending with the user's); iterate it for text."""
        messages, params = reply_request(messages, params, self.config.max_new_tokens_limit, self.sampling_defaults)
        params.check_vocabulary(self.vocab_size)
        max_new = min(params.max_new_tokens, max(1, self.context_window // 2))
        prompt_ids, dropped = build_prompt(
            self.tokenizer, messages, system=system,
            context_window=self.context_window, max_new_tokens=max_new, sampled=self.loop.sampled_replies,
        )
        stream = ReplyStream(prompt_ids, replace(params, max_new_tokens=max_new), dropped,
                             read_timeout=self.config.read_timeout)
        if params.structure is not None:
            stream.grammar = self.structured_output.matcher(params.structure)
        if messages[-1]["role"] == "assistant":  # a continued reply: its whole text is remembered as tokens
            stream.continues = self._continued_tokens(prompt_ids, messages[-1]["content"])
        return self.loop.submit(stream)

    def _continued_tokens(self, prompt_ids, text):
        """(text, its tokens) where the prompt ends with the reply being continued, else None."""
        ids = self.loop.sampled_replies.get(text) or self.tokenizer.encode(text, add_special_tokens=False)
        return (text, tuple(ids)) if ids and tuple(prompt_ids[-len(ids):]) == tuple(ids) else None

    def logprobs_of(self, stream, text):
        """OpenAI's `logprobs.content` for an ended reply whose generated text is `text`, or None
        where its params did not ask for them (inference.logprobs)."""
        if not stream.params.logprobs:
            return None
        return openai_logprobs(stream.token_ids, stream.logprobs, self.loop.detokenizers.bytes_of, text)

    def reply(self, messages, params=None, system=None):
        return self.stream_reply(messages, params, system).text()

    def __repr__(self):
        return f"<Engine {self.name} on {self.device} ({str(self.dtype).removeprefix('torch.')})>"


def load_engine(config=None, **overrides):
    """Load an Engine. `load_engine()` gives the packaged default model on the best device."""
    config = config or EngineConfig(**overrides)
    model, tokenizer, name = load_model(config)
    return Engine(model, tokenizer, config, name)


def _stop_token_ids(model, tokenizer):
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    # ChatML templates end a turn with <|im_end|>, which some configs do not list as eos.
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return frozenset(ids)
