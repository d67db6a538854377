"""Tool calls in Qwen's format: parsed whole or as they stream, and forced by a grammar when a
request requires a call (OpenAI's tool_choice `required` or a named function)."""
import json

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from inference import InvalidParameters, SamplingParams
from inference.tool_calls import ToolCallParser, parse_reply
from tests.engine_support import user

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "maxLength": 12},
                                                "unit": {"enum": ["c", "f"]}},
                                                "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"],
    "additionalProperties": False}}}
REPLY = ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_time", "arguments": {"zone": "cet"}}\n</tool_call>')


def test_a_reply_with_calls_is_parsed_into_openai_tool_calls():
    content, calls = parse_reply(REPLY)
    assert content == "Let me look."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "c"}), ("get_time", {"zone": "cet"})]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert parse_reply("No tools needed.") == ("No tools needed.", [])
    assert parse_reply("<tool_call>\nnot json\n</tool_call>")[1] == []  # not a call: it stays text


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, len(REPLY)), max_size=12))
def test_streamed_in_any_pieces_a_reply_gives_the_same_text_and_calls(cuts):
    parser, text, calls = ToolCallParser(), [], []
    bounds = sorted(set(cuts)) + [len(REPLY)]
    start = 0
    for end in bounds:
        piece_text, piece_calls = parser.feed(REPLY[start:end])
        text.append(piece_text)
        calls += piece_calls
        start = end
    rest, last = parser.finish()
    assert "".join(text + [rest]).strip() == "Let me look."
    assert "<tool" not in "".join(text)  # no part of a tag is ever streamed as text
    assert [c["function"]["name"] for c in calls + last] == ["get_weather", "get_time"]


@pytest.mark.parametrize("name", ["get_weather", None])
def test_a_required_call_is_forced_and_follows_its_functions_schema(tiny_engine, name):
    structure = {"type": "tool_calls", "tools": [WEATHER, TIME], "name": name}
    stream = tiny_engine.stream_reply(user("What is the weather in Paris?"),
                                      SamplingParams(temperature=0, max_new_tokens=120, structure=structure))
    content, calls = parse_reply(stream.text())
    assert stream.finish_reason == "stop" and content == "" and calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in calls:
        assert name is None or call["function"]["name"] == name
        jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])


def test_tools_are_checked():
    for bad in ([], [{"type": "function"}], [{"type": "function", "function": {"name": "has space"}}],
                [{"type": "code_interpreter"}]):
        with pytest.raises(InvalidParameters):
            SamplingParams(structure={"type": "tool_calls", "tools": bad}).validate()
    with pytest.raises(InvalidParameters, match="no tool is named"):
        SamplingParams(structure={"type": "tool_calls", "tools": [WEATHER], "name": "other"}).validate()
