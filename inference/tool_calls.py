"""Tool calls in Qwen's (Hermes') format: the model writes

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

after its text, one block per call (the chat template tells it so when it is given tools). This
module parses such replies into OpenAI's tool calls, whole or as they stream, and builds the
grammar that makes a reply a call (OpenAI's tool_choice `required` or a named function).
"""
import json
import uuid

from .stop_strings import partial_length

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# The layout json.dumps writes (and the template renders calls in): natural for the model to follow,
# and no room for runaway whitespace.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def with_json_layout(schema):
    """The schema with llguidance's layout options (a copy; the schema itself is not changed)."""
    return {**schema, "x-guidance": JSON_LAYOUT}


def call_schema(function):
    """The JSON schema of one call of an OpenAI function tool ({"name", "parameters"?})."""
    parameters = function.get("parameters") or {"type": "object"}
    return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def tool_call_grammar(tools, name=None, open_id=None, close_id=None):
    """A lark grammar for a reply made of one or more calls of `tools` (OpenAI's function tools), or
    of the function `name` only; the tags are the tokenizer's own special tokens where given."""
    functions = [tool["function"] for tool in tools if name is None or tool["function"]["name"] == name]
    schema = call_schema(functions[0]) if len(functions) == 1 else {"anyOf": [call_schema(f) for f in functions]}
    open_tag = f"<[{open_id}]>" if open_id is not None else json.dumps(OPEN)
    close_tag = f"<[{close_id}]>" if close_id is not None else json.dumps(CLOSE)
    return (f'start: call ("\\n" call)*\n'
            f'call: {open_tag} "\\n" body "\\n" {close_tag}\n'
            f"body: %json {json.dumps(with_json_layout(schema))}\n")


def new_call(name, arguments):
    """An OpenAI tool call: arguments are a JSON string."""
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def parse_reply(text):
    """(content, tool calls) of a whole reply; a block that is not a valid call stays in the text."""
    parser = ToolCallParser()
    content, calls = parser.feed(text)
    more, last = parser.finish()
    return (content + more).strip() if calls or last else content + more, calls + last


class ToolCallParser:
    """Splits a streamed reply into its text and its calls: text is released as it comes, except what
    may be the start of a call's tag; a call is released once its block is closed."""

    def __init__(self):
        self.buffer = ""
        self.in_call = False

    def feed(self, piece):
        """(text to stream, calls completed) for the next piece of the reply."""
        self.buffer += piece
        text, calls = [], []
        while True:
            if not self.in_call:
                at = self.buffer.find(OPEN)
                if at < 0:
                    keep = partial_length(self.buffer, (OPEN,))
                    text.append(self.buffer[: len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep:]
                    break
                text.append(self.buffer[:at])
                self.buffer, self.in_call = self.buffer[at + len(OPEN):], True
            end = self.buffer.find(CLOSE)
            if end < 0:
                break
            block, self.buffer, self.in_call = self.buffer[:end], self.buffer[end + len(CLOSE):], False
            call = _call(block)
            if call is None:  # not a call after all: it is text
                text.append(OPEN + block + CLOSE)
            else:
                calls.append(call)
            self.buffer = self.buffer.lstrip("\n") if calls else self.buffer
        return "".join(text), calls

    def finish(self):
        """What is left at the end of the reply: held text, or an unclosed block's (as text)."""
        rest = (OPEN + self.buffer) if self.in_call else self.buffer
        self.buffer, self.in_call = "", False
        call = _call(rest[len(OPEN):]) if rest.startswith(OPEN) else None
        return ("", [call]) if call is not None else (rest, [])


def _call(block):
    try:
        value = json.loads(block)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return new_call(value["name"], arguments)
