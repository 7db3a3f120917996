"""Tool calling through the official `openai`, `ollama` and `anthropic` Python clients against a running
`owl serve` (qwen2.5-coder, whose template writes Hermes-style <tool_call> blocks).

    python tools_checks.py BASE_URL API_KEY MODEL

A two-turn conversation with a forced call, then one with `auto` where the model chooses
to call; the tool result goes back through the chat template and the answer uses it. The
answering turn sends `tool_choice: "none"` (the tools are then not shown): Qwen2.5-Coder-0.5B
shown its tools again only repeats its call. Even then it restates the call and the result
as JSON rather than in words (its top token after a tool response is `{"` at p > 0.9, with
every prompt tried): the answer is checked for one of the result's values (the temperature
or the sky, which only the tool result holds), not for prose.
Streamed calls arrive as deltas that the client's stream helper assembles. Every call's
arguments validate against the tool's schema. Prints `tools: ok`.
"""

import json
import sys

import anthropic
import jsonschema
import ollama
from openai import OpenAI

BASE, KEY, MODEL = sys.argv[1], sys.argv[2], sys.argv[3]
c = OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=300)

WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.", "parameters": WEATHER_PARAMS}}
TIME_PARAMS = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the current time in a timezone.", "parameters": TIME_PARAMS}}
TOOLS = [WEATHER, TIME]
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
RESULT = {"temperature": 14, "unit": "celsius", "sky": "light rain"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def chat(messages, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 160)
    return c.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, **kw)


def check_call(call, name=None):
    assert call.type == "function" and call.id.startswith("call_"), call
    assert name is None or call.function.name == name, call
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    return args


def uses_result(text):
    """Whether an answer restates a value that only the tool result holds."""
    return any(str(v) in text for v in (RESULT["temperature"], RESULT["sky"]))


def second_turn(messages, reply):
    """Sends each call's result back; the answer must use it."""
    messages = messages + [reply.model_dump(exclude_none=True)]
    for call in reply.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(RESULT)})
    r = chat(messages, tool_choice="none")
    answer = r.choices[0]
    assert answer.finish_reason == "stop" and not answer.message.tool_calls, answer
    assert uses_result(answer.message.content), answer.message.content
    return answer.message.content


# A forced call (a named function): the arguments follow the schema by construction.
ask = [SYSTEM, {"role": "user", "content": "What's the weather like in Paris today?"}]
r = chat(ask, tool_choice={"type": "function", "function": {"name": "get_weather"}})
forced = r.choices[0]
assert forced.finish_reason == "tool_calls", forced
assert forced.message.content in (None, ""), forced.message
args = check_call(forced.message.tool_calls[0], "get_weather")
assert "paris" in args["city"].lower(), args
print("forced call:", args, "->", second_turn(ask, forced.message))

# `auto`: the model chooses to call, then answers from the result.
ask = [SYSTEM, {"role": "user", "content": "Use the weather tool: what is the weather in Tokyo right now, in celsius?"}]
r = chat(ask, tool_choice="auto")
auto = r.choices[0]
assert auto.finish_reason == "tool_calls" and auto.message.tool_calls, auto
args = check_call(auto.message.tool_calls[0], "get_weather")
print("auto call:", args, "->", second_turn(ask, auto.message))

# `required`, streamed: the client's stream helper assembles the deltas into calls.
stream_ask = [{"role": "user", "content": "What time is it in Tokyo?"}]
with c.chat.completions.stream(model=MODEL, messages=stream_ask, tools=TOOLS, tool_choice="required",
                               temperature=0, max_tokens=160) as s:
    final = s.get_final_completion()
streamed = final.choices[0]
assert streamed.finish_reason == "tool_calls" and streamed.message.tool_calls, streamed
for call in streamed.message.tool_calls:
    check_call(call)
# The same request not streamed gives the same calls.
plain = chat(stream_ask, tool_choice="required").choices[0].message.tool_calls
assert [(x.function.name, x.function.arguments) for x in plain] == \
       [(x.function.name, x.function.arguments) for x in streamed.message.tool_calls]

# Raw deltas: the first names the call, with an id and an index; arguments are strings.
deltas = []
for chunk in chat(stream_ask, tool_choice="required", stream=True):
    if chunk.choices and chunk.choices[0].delta.tool_calls:
        deltas += chunk.choices[0].delta.tool_calls
assert deltas and deltas[0].index == 0 and deltas[0].id and deltas[0].function.name, deltas

# `none`: no calls, a text answer.
r = chat([{"role": "user", "content": "Say hello."}], tool_choice="none", max_tokens=20)
assert not r.choices[0].message.tool_calls and r.choices[0].message.content, r.choices[0]

# Ollama's client: tools in, `tool_calls` out with the arguments as an object.
o = ollama.Client(host=BASE, headers={"Authorization": f"Bearer {KEY}"})
r = o.chat(model=MODEL, messages=ask, tools=TOOLS, options={"temperature": 0, "num_predict": 160})
calls = r.message.tool_calls
assert calls and calls[0].function.name == "get_weather", r.message
jsonschema.validate(dict(calls[0].function.arguments), WEATHER_PARAMS)

# Anthropic's client: `tool_use` blocks out, `tool_result` blocks back in, streamed too.
a = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0, timeout=300)
A_TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"],
            "input_schema": t["function"]["parameters"]} for t in TOOLS]
G = {"extra_body": {"temperature": 0}}
a_ask = [{"role": "user", "content": "What's the weather like in Paris today?"}]
a_system = SYSTEM["content"]
m = a.messages.create(model=MODEL, max_tokens=160, tools=A_TOOLS, messages=a_ask, system=a_system,
                      tool_choice={"type": "tool", "name": "get_weather"}, **G)
uses = [b for b in m.content if b.type == "tool_use"]
assert m.stop_reason == "tool_use" and uses and uses[0].name == "get_weather", m
assert uses[0].id.startswith("toolu_"), uses[0]
jsonschema.validate(uses[0].input, WEATHER_PARAMS)
with a.messages.stream(model=MODEL, max_tokens=160, tools=A_TOOLS, messages=a_ask, system=a_system,
                       tool_choice={"type": "tool", "name": "get_weather"}, **G) as s:
    streamed = s.get_final_message()
s_uses = [b for b in streamed.content if b.type == "tool_use"]
assert streamed.stop_reason == "tool_use" and [(b.name, b.input) for b in s_uses] == \
       [(b.name, b.input) for b in uses], (streamed, m)
follow = a_ask + [{"role": "assistant", "content": [b.model_dump() for b in m.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                "content": json.dumps(RESULT)}]}]
answer = a.messages.create(model=MODEL, max_tokens=160, tools=A_TOOLS, messages=follow, system=a_system,
                           tool_choice={"type": "none"}, **G)
text = "".join(b.text for b in answer.content if b.type == "text")
assert answer.stop_reason == "end_turn" and uses_result(text), answer
print("anthropic tool_use:", uses[0].input, "->", text)
print("tools: ok")
