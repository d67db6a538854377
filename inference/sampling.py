import json
import re
from dataclasses import asdict, dataclass

from .errors import EngineError


class InvalidParameters(EngineError):
    pass


MAX_SEED = 2**63 - 1  # torch.Generator takes a signed 64-bit seed
# Below this temperature logits / temperature overflows to inf (and softmax to NaN), and the
# distribution is a point mass anyway: such temperatures decode greedily.
GREEDY_BELOW_TEMPERATURE = 1e-3


def is_greedy(params):
    return params.temperature < GREEDY_BELOW_TEMPERATURE


MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 200
MAX_STOP_TOKEN_IDS = 32
MAX_LOGIT_BIAS = 300  # OpenAI's limit on logit_bias entries
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_TOKEN_ID = 2**31 - 1  # the engine checks ids against its vocabulary
MAX_SCHEMA_CHARS = 32_000
MAX_TOOLS = 64
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for a function's name
FIELDS = ("temperature", "top_p", "max_new_tokens", "seed", "top_k", "min_p", "repetition_penalty",
          "presence_penalty", "frequency_penalty", "logit_bias", "min_tokens", "stop", "stop_token_ids",
          "logprobs", "top_logprobs", "structure")


@dataclass(frozen=True)
class SamplingParams:
    """Per-reply sampling settings. temperature 0 (or below GREEDY_BELOW_TEMPERATURE) means greedy
    decoding; seed, when given, is in 0..2**63-1. The rest, off by default, are those of the serving
    engines (vLLM's SamplingParams, OpenAI's fields): top_k (0: off), min_p, repetition_penalty (over
    the prompt and the reply, 1: off), presence and frequency penalties (over the reply), logit_bias
    ({token id: -100..100}), min_tokens (no stop before), stop strings (up to 4; the reply ends before
    one, which is never streamed), stop_token_ids, logprobs / top_logprobs of each sampled token, and
    a structure the reply must have (JSON, inference.structured_output)."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int | None = None
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict | None = None
    min_tokens: int = 0
    stop: tuple = ()
    stop_token_ids: tuple = ()
    logprobs: bool = False
    top_logprobs: int = 0
    structure: dict | None = None

    def as_dict(self):
        values = asdict(self)
        values["stop"], values["stop_token_ids"] = list(self.stop), list(self.stop_token_ids)
        if self.logit_bias is not None:  # JSON object keys are strings
            values["logit_bias"] = {str(token): bias for token, bias in self.logit_bias.items()}
        return values

    @property
    def penalized(self):
        """Whether drawing a token needs the counts of the tokens seen so far (inference.sampler)."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @classmethod
    def from_dict(cls, values, max_new_tokens_limit=4096):
        """Build validated params from untrusted input (a dict from JSON); unknown keys are refused."""
        values = dict(values or {})
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise InvalidParameters(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        if isinstance(values.get("stop"), str):  # OpenAI takes one string or a list
            values["stop"] = [values["stop"]]
        for name in ("stop", "stop_token_ids"):
            if name in values:
                if values[name] is None:
                    values[name] = ()
                elif not isinstance(values[name], (list, tuple)):
                    raise InvalidParameters(f"{name} must be a list")
                values[name] = tuple(values[name])
        if values.get("logit_bias") is not None:
            values["logit_bias"] = _logit_bias(values["logit_bias"])
        params = cls(**values)
        params.validate(max_new_tokens_limit)
        return params

    def validate(self, max_new_tokens_limit=4096):
        _check_number("temperature", self.temperature, 0.0, 2.0)
        _check_number("top_p", self.top_p, 0.0, 1.0, low_inclusive=False)
        _check_integer("max_new_tokens", self.max_new_tokens, 1, max_new_tokens_limit)
        if self.seed is not None:
            _check_integer("seed", self.seed, 0, MAX_SEED)
        _check_integer("top_k", self.top_k, 0, MAX_TOKEN_ID)
        _check_number("min_p", self.min_p, 0.0, 1.0)
        _check_number("repetition_penalty", self.repetition_penalty, 0.0, 2.0, low_inclusive=False)
        _check_number("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_number("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _check_integer("min_tokens", self.min_tokens, 0, self.max_new_tokens)
        if len(self.stop) > MAX_STOP_STRINGS or not all(
                isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in self.stop):
            raise InvalidParameters(f"stop must be at most {MAX_STOP_STRINGS} non-empty strings of at most "
                                    f"{MAX_STOP_CHARS} characters")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise InvalidParameters(f"stop_token_ids takes at most {MAX_STOP_TOKEN_IDS} ids")
        for token in self.stop_token_ids:
            _check_integer("stop_token_ids", token, 0, MAX_TOKEN_ID)
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict) or len(self.logit_bias) > MAX_LOGIT_BIAS:
                raise InvalidParameters(f"logit_bias must be an object of at most {MAX_LOGIT_BIAS} token ids")
            for token, bias in self.logit_bias.items():
                _check_integer("logit_bias token id", token, 0, MAX_TOKEN_ID)
                _check_number("logit_bias", bias, -100.0, 100.0)
        if not isinstance(self.logprobs, bool):
            raise InvalidParameters("logprobs must be true or false")
        _check_integer("top_logprobs", self.top_logprobs, 0, MAX_TOP_LOGPROBS)
        if self.top_logprobs and not self.logprobs:
            raise InvalidParameters("top_logprobs needs logprobs set to true")
        if self.structure is not None:
            schema_of(self.structure)

    def check_vocabulary(self, vocab_size):
        """Token ids (stop_token_ids, logit_bias) must exist in the model's vocabulary."""
        ids = list(self.stop_token_ids) + list(self.logit_bias or ())
        if any(token >= vocab_size for token in ids):
            raise InvalidParameters(f"token ids must be below the vocabulary size, {vocab_size}")


def check_tools(tools):
    """OpenAI's function tools: [{"type": "function", "function": {"name", "description"?, "parameters"?}}]."""
    if not isinstance(tools, list) or not 1 <= len(tools) <= MAX_TOOLS:
        raise InvalidParameters(f"tools must be a list of 1 to {MAX_TOOLS} function tools")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or \
                not FUNCTION_NAME.fullmatch(function["name"]):
            raise InvalidParameters("each tool must be {'type': 'function', 'function': {'name': ...}} with a name of "
                                    "letters, digits, _ or - (at most 64)")
        if not isinstance(function.get("parameters", {}), dict):
            raise InvalidParameters(f"the parameters of tool {function['name']!r} must be a JSON schema object")
    if len(json.dumps(tools)) > MAX_SCHEMA_CHARS:
        raise InvalidParameters(f"the tools are over {MAX_SCHEMA_CHARS} characters of JSON")
    return tools


def schema_of(structure):
    """The JSON schema a `structure` ({"type": "json_object"} or {"type": "json_schema", "schema":
    {...}}) asks for (None for {"type": "tool_calls", "tools": [...], "name"?}: a reply of calls,
    inference.tool_calls); InvalidParameters for anything else."""
    kinds = {"json_object": {"type"}, "json_schema": {"type", "schema"}, "tool_calls": {"type", "tools", "name"}}
    if not isinstance(structure, dict) or structure.get("type") not in kinds or (
            set(structure) - kinds[structure["type"]]):
        raise InvalidParameters("structure must be {'type': 'json_object'}, {'type': 'json_schema', 'schema': {...}} "
                                "or {'type': 'tool_calls', 'tools': [...], 'name'?}")
    if structure["type"] == "json_object":
        return {"type": "object"}
    if structure["type"] == "tool_calls":
        names = [tool["function"]["name"] for tool in check_tools(structure.get("tools"))]
        if structure.get("name") is not None and structure["name"] not in names:
            raise InvalidParameters(f"no tool is named {str(structure['name'])[:64]!r}")
        return None
    schema = structure.get("schema")
    if not isinstance(schema, dict):
        raise InvalidParameters("a json_schema structure needs its 'schema' as an object")
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise InvalidParameters(f"the JSON schema is over {MAX_SCHEMA_CHARS} characters")
    return schema


def _logit_bias(raw):
    """{token id: bias} from JSON, whose object keys are strings."""
    if not isinstance(raw, dict):
        raise InvalidParameters("logit_bias must be an object mapping token ids to biases")
    bias = {}
    for key, value in raw.items():
        text = str(key)
        if not text.isdigit() or len(text) > 10:
            raise InvalidParameters(f"logit_bias keys must be token ids, not {text[:20]!r}")
        bias[int(text)] = value
    return bias


def _check_integer(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameters(f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidParameters(f"{name} must be between {low} and {high}")


def _check_number(name, value, low, high, low_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameters(f"{name} must be a number")
    too_low = value < low if low_inclusive else value <= low
    if too_low or value > high or value != value:
        bracket = "[" if low_inclusive else "("
        raise InvalidParameters(f"{name} must be in {bracket}{low}, {high}]")


MODEL_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def model_defaults(generation_config):
    """The sampling a model recommends, from its generation_config.json (what is there of
    MODEL_DEFAULT_FIELDS; do_sample false means greedy). A request's own values win over these."""
    if generation_config is None:
        return {}
    defaults = {}
    for name in MODEL_DEFAULT_FIELDS:
        value = getattr(generation_config, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            defaults[name] = value
    if getattr(generation_config, "do_sample", None) is False:
        defaults["temperature"] = 0.0
    try:
        SamplingParams.from_dict(defaults)
    except (InvalidParameters, TypeError):  # a value out of our bounds: ignore the file's, not fail
        return {}
    return defaults


def reply_request(messages, params, max_new_tokens_limit, defaults=None):
    """(messages, SamplingParams) for a reply: a bare string is one user message, params may be
    None (the defaults), a dict (validated; what it leaves out comes from `defaults`, the model's,
    then SamplingParams') or SamplingParams (taken as it is, validated again)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if params is None or isinstance(params, dict):
        params = SamplingParams.from_dict({**(defaults or {}), **(params or {})}, max_new_tokens_limit)
    params.validate(max_new_tokens_limit)
    return messages, params
