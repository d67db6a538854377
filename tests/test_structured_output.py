"""Structured replies: a JSON schema (or any JSON object) enforced while sampling, with llguidance's
token masks applied in the batched sampler. The tiny model writes random tokens, so whatever it
writes under the mask is the mask's doing."""
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from inference import InvalidParameters, SamplingParams
from tests.engine_support import user

SCHEMAS = [
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
     "required": ["ok", "n"], "additionalProperties": False},
    {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 6},
                                               "maxItems": 3}},
     "required": ["colour", "tags"], "additionalProperties": False},
    {"type": "object", "properties": {
        "point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -5, "maximum": 5},
                                                   "y": {"type": "integer", "minimum": -5, "maximum": 5}},
                  "required": ["x", "y"], "additionalProperties": False},
        "label": {"type": "string", "maxLength": 8}},
     "required": ["point", "label"], "additionalProperties": False},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 1, "maxItems": 4},
]


def structured(schema, **params):
    return SamplingParams(max_new_tokens=120, structure={"type": "json_schema", "schema": schema}, **params)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=st.sampled_from(SCHEMAS), seed=st.integers(0, 2**32), temperature=st.sampled_from([0.0, 0.8, 1.5]))
def test_a_structured_reply_parses_and_follows_its_schema(tiny_engine, schema, seed, temperature):
    stream = tiny_engine.stream_reply(user("Give me some JSON"), structured(schema, seed=seed, temperature=temperature,
                                                                           top_p=1.0))
    text = stream.text()
    assert stream.finish_reason == "stop", text
    jsonschema.validate(json.loads(text), schema)


def test_several_structured_replies_share_a_batch_with_a_free_one(tiny_engine):
    free = tiny_engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=20))
    replies = [tiny_engine.stream_reply(user("JSON please"), structured(schema, temperature=0)) for schema in SCHEMAS]
    for schema, stream in zip(SCHEMAS, replies):
        jsonschema.validate(json.loads(stream.text()), schema)
    free.text()
    assert free.finish_reason == "length"  # the free row was not held to anyone's grammar
    any_object = tiny_engine.stream_reply(user("JSON please"), SamplingParams(
        temperature=1.0, seed=4, max_new_tokens=60, structure={"type": "json_object"}))
    text = any_object.text()
    if any_object.finish_reason == "stop":  # an open object may run to the length limit
        assert isinstance(json.loads(text), dict)
    else:
        assert text.startswith("{")


def test_a_schema_that_cannot_be_used_is_refused_before_generating(tiny_engine):
    with pytest.raises(InvalidParameters):
        SamplingParams(structure={"type": "xml"}).validate()
    with pytest.raises(InvalidParameters, match="cannot be used"):
        tiny_engine.stream_reply(user("hi"), structured({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}))
