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


@dataclass(frozen=True)
class SamplingParams:
    """Per-reply sampling settings. temperature 0 (or below GREEDY_BELOW_TEMPERATURE) means greedy
    decoding; seed, when given, is in 0..2**63-1."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int | None = None

    def as_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values, max_new_tokens_limit=4096):
        """Build validated params from untrusted input (a dict from JSON); unknown keys are refused."""
        values = dict(values or {})
        unknown = set(values) - {"temperature", "top_p", "max_new_tokens", "seed"}
        if unknown:
            raise InvalidParameters(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        params = cls(**values)
        params.validate(max_new_tokens_limit)
        return params

    def validate(self, max_new_tokens_limit=4096):
        _check_number("temperature", self.temperature, 0.0, 2.0)
        _check_number("top_p", self.top_p, 0.0, 1.0, low_inclusive=False)
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise InvalidParameters("max_new_tokens must be an integer")
        if not 1 <= self.max_new_tokens <= max_new_tokens_limit:
            raise InvalidParameters(f"max_new_tokens must be between 1 and {max_new_tokens_limit}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidParameters("seed must be an integer")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidParameters(f"seed must be between 0 and {MAX_SEED}")


def _check_number(name, value, low, high, low_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameters(f"{name} must be a number")
    too_low = value < low if low_inclusive else value <= low
    if too_low or value > high or value != value:
        bracket = "[" if low_inclusive else "("
        raise InvalidParameters(f"{name} must be in {bracket}{low}, {high}]")


def reply_request(messages, params, max_new_tokens_limit):
    """(messages, SamplingParams) for a reply: a bare string is one user message, params may be
    None (the defaults), a dict (validated) or SamplingParams (validated again)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if params is None:
        params = SamplingParams()
    elif isinstance(params, dict):
        params = SamplingParams.from_dict(params, max_new_tokens_limit)
    params.validate(max_new_tokens_limit)
    return messages, params
