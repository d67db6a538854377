"""OpenAI's request fields: each one used or refused by name, never ignored (chat.api_fields)."""
import pytest

from chat.api_fields import FieldError, choices_count, sampling_values
from inference import SamplingParams


def test_the_openai_and_vllm_sampling_fields_map_onto_the_engines_params():
    body = {"model": "default", "messages": [], "temperature": 0.2, "top_p": 0.9, "seed": 4, "max_tokens": 30,
            "stop": ["\n\n", "END"], "presence_penalty": 0.5, "frequency_penalty": 0.1, "logit_bias": {"42": -100},
            "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
            "min_tokens": 2, "stop_token_ids": [7], "response_format": {"type": "json_object"}}
    params = SamplingParams.from_dict(sampling_values(body))
    assert (params.temperature, params.top_p, params.seed, params.max_new_tokens) == (0.2, 0.9, 4, 30)
    assert params.stop == ("\n\n", "END") and params.logit_bias == {42: -100} and params.stop_token_ids == (7,)
    assert (params.top_k, params.min_p, params.repetition_penalty, params.min_tokens) == (20, 0.05, 1.1, 2)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, 0.1)
    assert params.structure == {"type": "json_object"}
    assert sampling_values({"max_completion_tokens": 9, "max_tokens": 5})["max_new_tokens"] == 9
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    strict = sampling_values({"response_format": {"type": "json_schema",
                                                  "json_schema": {"name": "x", "strict": True, "schema": schema}}})
    assert strict["structure"] == {"type": "json_schema", "schema": schema}
    assert "structure" not in sampling_values({"response_format": {"type": "text"}})


@pytest.mark.parametrize("body, param", [
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"made_up_field": 1}, "made_up_field"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
])
def test_a_field_the_server_does_not_support_is_refused_by_name(body, param):
    with pytest.raises(FieldError) as refused:
        sampling_values(body)
    assert refused.value.param == param and param in refused.value.message


def test_n_is_bounded():
    assert choices_count({}) == 1 and choices_count({"n": 1}) == 1 and choices_count({"n": 4}) == 4
    for bad in (0, 5, True, "2"):
        with pytest.raises(FieldError):
            choices_count({"n": bad})
