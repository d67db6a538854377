"""Timings, speeds and parameters as a reviewer reads them."""
import pytest

from chat.formatting import format_params, format_percent, format_rate, format_seconds
from chat.models import Message, decode_rate


@pytest.mark.parametrize("ms, shown", [
    (612.4, "0.61 s"), (4803.220347999968, "4.80 s"), (12_345, "12.3 s"), (123_456, "123 s"),
    (3, "< 0.01 s"), (0, "< 0.01 s"), (None, "–"),
])
def test_durations_are_shown_in_seconds(ms, shown):
    assert format_seconds(ms) == shown


@pytest.mark.parametrize("rate, shown", [(5.7272, "5.7 tok/s"), (0.42, "0.4 tok/s"), (250.4, "250 tok/s"),
                                         (None, "–")])
def test_speeds_are_shown_in_tokens_per_second(rate, shown):
    assert format_rate(rate) == shown


def test_the_speed_counts_the_tokens_after_the_first_over_the_time_after_it():
    assert decode_rate(25, 4803.22, 612.4) == pytest.approx(24 / 4.19082)
    message = Message(completion_tokens=25, generation_ms=4803.22, time_to_first_token_ms=612.4)
    assert format_rate(message.tokens_per_second) == "5.7 tok/s"


@pytest.mark.parametrize("tokens, generation_ms, first_token_ms", [
    (1, 900.0, 100.0), (0, 900.0, 100.0), (None, 900.0, 100.0), (10, None, 100.0), (10, 900.0, None),
    (10, 100.0, 100.0),
])
def test_there_is_no_speed_without_two_tokens_and_time_between_them(tokens, generation_ms, first_token_ms):
    assert decode_rate(tokens, generation_ms, first_token_ms) is None


def test_sampling_parameters_are_shown_in_a_fixed_order_without_the_system_prompt():
    params = {"system": "Be brief.", "seed": 7, "max_new_tokens": 24, "top_p": 0.95, "temperature": 0.7}
    assert format_params(params) == "temperature 0.7 · top_p 0.95 · max_new_tokens 24 · seed 7"
    assert format_params({"temperature": 0.0, "seed": None}) == "temperature 0"
    assert format_params({}) == "" and format_params(None) == ""


@pytest.mark.parametrize("fraction, shown", [(0.0, "0%"), (0.25, "25%"), (1.0, "100%"), (0.034, "3.4%"),
                                             (None, "–")])
def test_rates_are_shown_as_percentages(fraction, shown):
    assert format_percent(fraction) == shown
