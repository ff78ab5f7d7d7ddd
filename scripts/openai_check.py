"""The official OpenAI Python SDK, unchanged, against a running `cocoon up`.

Usage: python3 scripts/openai_check.py DIR/network.json MODEL [--structured] [--tools] [--logprobs]

Runs one non-streamed and one streamed chat completion and checks the answer text and the
usage numbers (the streamed answer must equal the non-streamed one at temperature 0, with the
same token counts). With --structured, also a `response_format: json_schema` request whose
answer must validate against its schema (`jsonschema`, pinned next to the SDK). With --tools,
a function-calling round trip, non-streamed and streamed: a request with `tools` and
`tool_choice: "required"` (SmolLM2 does not call tools by itself; the engine's grammar makes it)
answered with `tool_calls` whose arguments fit the tool's schema, then the assistant's message
and a `tool` result sent back, answered in text. With --logprobs, `logprobs`/`top_logprobs`
whose tokens make the answer's text, streamed and not.
"""

import json
import sys

from openai import OpenAI

net = json.load(open(sys.argv[1]))
model = sys.argv[2]
client = OpenAI(base_url=net["base_url"], api_key=net["api_key"])
messages = [{"role": "user", "content": "What is the capital of France?"}]

r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=32)
text = r.choices[0].message.content
u = r.usage
print(f"non-streamed: {text!r} usage={u.prompt_tokens}+{u.completion_tokens}")
assert "Paris" in text, text
assert u.prompt_tokens > 0 and u.completion_tokens > 0, u
assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u

stream = client.chat.completions.create(
    model=model,
    messages=messages,
    temperature=0,
    max_tokens=32,
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
streamed = "".join(parts)
print(f"streamed in {len(parts)} parts: {streamed!r} usage={usage.prompt_tokens}+{usage.completion_tokens}")
assert len(parts) > 1, parts
assert streamed == text, (streamed, text)
assert usage is not None
assert (usage.prompt_tokens, usage.completion_tokens) == (u.prompt_tokens, u.completion_tokens), (usage, u)

# Structured output: the answer fits its schema, enforced by a grammar in the engine.
if "--structured" in sys.argv[3:]:
    import jsonschema  # pinned next to the SDK

    schema = {
        "type": "object",
        "properties": {
            "capital": {"type": "string"},
            "country": {"type": "string"},
            "population_millions": {"type": "number"},
            "continent": {"enum": ["Europe", "Asia", "Africa", "America", "Oceania"]},
        },
        "required": ["capital", "country", "population_millions", "continent"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=0,
        max_tokens=100,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "capital", "strict": True, "schema": schema}},
    )
    answer = json.loads(r.choices[0].message.content)
    jsonschema.validate(answer, schema)
    print(f"json_schema: {answer} fits its schema; usage={r.usage.prompt_tokens}+{r.usage.completion_tokens}")
    assert r.usage.completion_tokens > 0

# Function calling: the call, the result, the answer.
if "--tools" in sys.argv[3:]:
    import jsonschema  # pinned next to the SDK

    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    }
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": parameters, "strict": True}}]
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    models = client.models.list()
    features = [m.model_extra.get("features") for m in models.data if m.id == model]
    assert features and "tools" in features[0], features
    r = client.chat.completions.create(model=model, messages=ask, tools=tools, tool_choice="required",
                                       temperature=0, max_tokens=60)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather", call
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, parameters)
    print(f"tool call: {call.function.name}({args}) id={call.id}; usage={r.usage.prompt_tokens}+{r.usage.completion_tokens}")

    # The same request streamed: the call arrives as delta.tool_calls pieces.
    pieces = {}
    finish = None
    for chunk in client.chat.completions.create(model=model, messages=ask, tools=tools, tool_choice="required",
                                                temperature=0, max_tokens=60, stream=True):
        if not chunk.choices:
            continue
        for d in chunk.choices[0].delta.tool_calls or []:
            p = pieces.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            p["id"] = d.id or p["id"]
            p["name"] += (d.function.name or "") if d.function else ""
            p["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls", finish
    assert list(pieces) == [0], pieces
    assert pieces[0]["name"] == "get_weather" and json.loads(pieces[0]["arguments"]) == args, pieces
    assert pieces[0]["id"].startswith("call_"), pieces
    print(f"streamed tool call: {pieces[0]}")

    # The result goes back with the assistant's message as the SDK returned it.
    follow = ask + [choice.message, {"role": "tool", "tool_call_id": call.id,
                                     "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    r2 = client.chat.completions.create(model=model, messages=follow, tools=tools, temperature=0, max_tokens=40)
    text2 = r2.choices[0].message.content
    assert r2.choices[0].finish_reason in ("stop", "length", "tool_calls"), r2
    assert text2 or r2.choices[0].message.tool_calls, r2
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens, (r2.usage, r.usage)
    print(f"after the tool result: {text2!r} ({r2.choices[0].finish_reason}); usage={r2.usage.prompt_tokens}+{r2.usage.completion_tokens}")
    parts = []
    for chunk in client.chat.completions.create(model=model, messages=follow, tools=tools, tool_choice="none",
                                                temperature=0, max_tokens=40, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert "".join(parts).strip(), parts
    print(f"streamed, tool_choice none: {''.join(parts)!r}")

# Log probabilities: one per token, making the text.
if "--logprobs" in sys.argv[3:]:
    r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content, (content, r)
    assert len(content) == r.usage.completion_tokens, (len(content), r.usage)
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3, t
        assert t.top_logprobs[0].token == t.token, t  # temperature 0: the most likely
    streamed = []
    for chunk in client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16,
                                                logprobs=True, top_logprobs=3, stream=True):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            streamed.extend(t.token for t in chunk.choices[0].logprobs.content)
    assert "".join(streamed) == r.choices[0].message.content, streamed
    print(f"logprobs: {len(content)} tokens, first {content[0].token!r} {content[0].logprob:.3f}")

try:
    OpenAI(base_url=net["base_url"], api_key="wrong").chat.completions.create(model=model, messages=messages)
    raise SystemExit("a wrong API key was accepted")
except Exception as e:  # openai.AuthenticationError
    assert "401" in str(e) or "authentication" in str(e).lower(), e
print("OpenAI SDK check passed")
