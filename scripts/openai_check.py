"""The official OpenAI Python SDK, unchanged, against a running `cocoon up`.

Usage: python3 scripts/openai_check.py DIR/network.json MODEL [--structured]

Runs one non-streamed and one streamed chat completion and checks the answer text and the
usage numbers (the streamed answer must equal the non-streamed one at temperature 0, with the
same token counts). With --structured, also a `response_format: json_schema` request whose
answer must validate against its schema (`jsonschema`, pinned next to the SDK).
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

try:
    OpenAI(base_url=net["base_url"], api_key="wrong").chat.completions.create(model=model, messages=messages)
    raise SystemExit("a wrong API key was accepted")
except Exception as e:  # openai.AuthenticationError
    assert "401" in str(e) or "authentication" in str(e).lower(), e
print("OpenAI SDK check passed")
