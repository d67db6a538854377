"""OpenAI's chat-completion request fields, read into this service's sampling params.

Every field a client may send is either used (mapped onto inference.sampling.SamplingParams or
read by chat.api) or refused by name with a 400, as OpenAI refuses an argument it does not know:
a client can always tell that something it asked for did not happen.
"""
# Read by chat.api itself (the conversation, how to answer); `user` is OpenAI's end-user label.
HANDLED_BY_API = {"model", "messages", "stream", "stream_options", "continue_final_message", "n", "user",
                  "add_generation_prompt"}  # vLLM's, sent with continue_final_message (chat.api._messages)
# OpenAI's names that mean the same here.
SAME_NAME = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")
# The engine has these, but their way from the worker to the answer is not built yet: refused, not ignored.
NOT_YET = {"tools": "tool calls", "tool_choice": "tool calls",
           "parallel_tool_calls": "tool calls", "functions": "tool calls", "function_call": "tool calls"}
# vLLM's extra sampling fields, which many clients send to self-hosted servers.
VLLM_EXTRAS = ("top_k", "min_p", "repetition_penalty", "min_tokens", "stop_token_ids")
MAX_N = 4  # choices of one call (each a reply in the batch: a quarter of the default batch of 16)


class FieldError(Exception):
    def __init__(self, message, param):
        super().__init__(message)
        self.message, self.param = message, param


def sampling_values(body):
    """The sampling params (a dict for SamplingParams.from_dict) of a chat-completion request body;
    FieldError naming the first field that is not supported."""
    known = HANDLED_BY_API | set(SAME_NAME) | set(VLLM_EXTRAS) | {
        "max_tokens", "max_completion_tokens", "stop", "logit_bias", "response_format"}
    for name in body:
        if name in NOT_YET and body[name] not in (None, False, [], "none"):
            raise FieldError(f"{name}: {NOT_YET[name]} are not supported by this server's API yet", name)
        if name not in known and name not in NOT_YET:
            raise FieldError(f"Unrecognized request argument supplied: {name} (this server does not support it)",
                             name)
    values = {name: body[name] for name in SAME_NAME + VLLM_EXTRAS if body.get(name) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        values["max_new_tokens"] = max_tokens
    if body.get("stop") is not None:
        values["stop"] = body["stop"]
    if body.get("logit_bias") is not None:
        values["logit_bias"] = body["logit_bias"]
    structure = response_structure(body.get("response_format"))
    if structure is not None:
        values["structure"] = structure
    return values


def response_structure(response_format):
    """SamplingParams.structure for OpenAI's `response_format` (None for plain text)."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise FieldError("response_format json_schema needs json_schema.schema, an object",
                             "response_format")
        # strict or not, the schema is enforced while sampling: the reply always follows it
        return {"type": "json_schema", "schema": spec["schema"]}
    raise FieldError("response_format.type must be text, json_object or json_schema", "response_format")


def choices_count(body):
    """How many choices (`n`) a request asks for, within MAX_N."""
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise FieldError(f"n must be an integer from 1 to {MAX_N}", "n")
    return n

