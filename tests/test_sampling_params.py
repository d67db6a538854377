import pytest

from inference import InvalidParameters, SamplingParams


def test_it_accepts_values_within_bounds():
    params = SamplingParams.from_dict({"temperature": 0, "top_p": 1, "max_new_tokens": 10})
    assert (params.temperature, params.top_p, params.max_new_tokens) == (0, 1, 10)


@pytest.mark.parametrize("values, message", [
    ({"temperature": -0.1}, "temperature must be in"),
    ({"temperature": 2.5}, "temperature must be in"),
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"temperature": True}, "temperature must be a number"),
    ({"temperature": float("nan")}, "temperature must be in"),
    ({"top_p": 0}, "top_p must be in (0.0, 1.0]"),
    ({"top_p": 1.5}, "top_p must be in"),
    ({"max_new_tokens": 0}, "max_new_tokens must be between 1 and 100"),
    ({"max_new_tokens": 101}, "max_new_tokens must be between 1 and 100"),
    ({"max_new_tokens": 5.5}, "max_new_tokens must be an integer"),
    ({"seed": "x", "max_new_tokens": 5}, "seed must be an integer"),
    ({"colour": "blue"}, "unknown sampling parameter(s): colour"),
])
def test_it_rejects_bad_values_with_a_clear_message(values, message):
    with pytest.raises(InvalidParameters) as error:
        SamplingParams.from_dict(values, max_new_tokens_limit=100)
    assert message in str(error.value)
