"""The official `ollama` Python client against a running `owl serve` (smollm2).

    python ollama_checks.py BASE_URL API_KEY

Asserts; exits non-zero with the traceback on the first failure, prints `ollama: ok`.
"""

import json
import sys
from typing import Literal

import httpx
import jsonschema
import ollama
import pydantic

BASE, KEY = sys.argv[1], sys.argv[2]
c = ollama.Client(host=BASE, headers={"Authorization": f"Bearer {KEY}"})
OPTS = {"temperature": 0, "num_predict": 12}

# The model list, details, what is loaded, the version.
tags = c.list()
assert [m.model for m in tags.models] == ["smollm2:latest"], tags
d = tags.models[0].details
assert d.format == "gguf" and d.family == "llama" and d.parameter_size == "135M" and d.quantization_level == "Q4_1", d
assert tags.models[0].size > 50_000_000
show = c.show("smollm2")
assert "<|im_start|>" in show.template and "completion" in show.capabilities, show
assert show.modelinfo["general.embedding_length"] == 576, show.modelinfo
ps = c.ps()
assert ps.models[0].name == "smollm2:latest"
assert httpx.get(f"{BASE}/api/version", headers={"Authorization": f"Bearer {KEY}"}).json()["version"]

# Chat, not streamed and streamed: the same text; counts and the reason at the end.
messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a fruit."}]
r = c.chat(model="smollm2", messages=messages, options=OPTS, keep_alive="5m")
assert r.message.role == "assistant" and r.message.content, r
assert r.done and r.done_reason in ("stop", "length") and 0 < r.eval_count <= 12, r
assert r.prompt_eval_count > 10 and r.total_duration > 0
parts = list(c.chat(model="smollm2", messages=messages, options=OPTS, stream=True))
assert "".join(p.message.content for p in parts) == r.message.content, parts
assert parts[-1].done and not any(p.done for p in parts[:-1]) and parts[-1].eval_count == r.eval_count

# Generate: templated by default; raw continues the text; stop strings; seeds.
g = c.generate(model="smollm2", prompt="Name a fruit.", system="You are terse.", options=OPTS)
assert g.response == r.message.content, (g.response, r.message.content)
raw = c.generate(model="smollm2", prompt="The capital of France is", raw=True, options=OPTS)
assert raw.response and raw.done
streamed = "".join(p.response for p in c.generate(model="smollm2", prompt="The capital of France is", raw=True,
                                                   options=OPTS, stream=True))
assert streamed == raw.response, (streamed, raw.response)
counted = c.generate(model="smollm2", prompt="Count from 1 to 10, separated by commas.", raw=False,
                     options={"temperature": 0, "num_predict": 30})
assert "," in counted.response, counted.response
cut = c.generate(model="smollm2", prompt="Count from 1 to 10, separated by commas.",
                 options={"temperature": 0, "num_predict": 30, "stop": [","]})
assert cut.response == counted.response.split(",")[0], (cut.response, counted.response)
s1 = c.generate(model="smollm2", prompt="Tell me a word.", options={"temperature": 1.0, "seed": 42, "num_predict": 8})
s2 = c.generate(model="smollm2", prompt="Tell me a word.", options={"temperature": 1.0, "seed": 42, "num_predict": 8})
assert s1.response == s2.response

# Embeddings: unit vectors, one per input.
e = c.embed(model="smollm2", input=["An owl at night.", "An owl at night.", "Tax law."])
assert len(e.embeddings) == 3 and len(e.embeddings[0]) == 576
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
assert abs(dot(e.embeddings[0], e.embeddings[0]) - 1) < 1e-4 and dot(e.embeddings[0], e.embeddings[1]) > 0.99999
assert dot(e.embeddings[0], e.embeddings[2]) < 0.99

# Structured output: format "json" gives an object; a schema (here from pydantic, as Ollama's
# documentation shows) gives an object that validates, streamed or not.
j = c.generate(model="smollm2", prompt="List two colours as a JSON object with the keys first and second.", format="json", options={"temperature": 0, "num_predict": 200})
assert j.done_reason == "stop" and isinstance(json.loads(j.response), dict), j


class Pet(pydantic.BaseModel):
    # No other keys (`additionalProperties: false`): without it JSON Schema allows any, and a
    # sampled 135M model may add keys until `num_predict` cuts the object off.
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(max_length=20)
    kind: Literal["cat", "dog", "bird"]
    age: int = pydantic.Field(ge=0, le=30)


schema = Pet.model_json_schema()
pc = c.chat(model="smollm2", messages=[{"role": "user", "content": "Describe a pet."}], format=schema,
            options={"temperature": 1.0, "seed": 3, "num_predict": 200})
pet = Pet.model_validate_json(pc.message.content)
jsonschema.validate(json.loads(pc.message.content), schema)
parts = "".join(p.message.content for p in c.chat(model="smollm2", messages=[{"role": "user", "content": "A pet?"}],
                                                   format=schema, options={"temperature": 0, "num_predict": 200},
                                                   stream=True))
Pet.model_validate_json(parts)

bad = httpx.post(f"{BASE}/api/generate", headers={"Authorization": f"Bearer {KEY}"},
                 json={"model": "smollm2", "prompt": "x", "format": "yaml"})
assert bad.status_code == 400 and "format" in bad.json()["error"], bad.text

# Errors: Ollama's {"error": ...} with the status.
for call, status, words in [
    (lambda: c.chat(model="smollm2", messages=messages, options={"temperature": "hot"}), 400, "options.temperature"),
    (lambda: c.chat(model="llama9", messages=messages), 404, "llama9"),
    (lambda: c.generate(model="smollm2", prompt="x", format={"type": "bogus"}), 400, "format"),
    (lambda: c.generate(model="smollm2", prompt="word " * 3000), 400, "context"),
    (lambda: c.chat(model="smollm2", messages=messages, keep_alive="soon"), 400, "keep_alive"),
]:
    try:
        call()
        raise AssertionError(f"accepted: {words}")
    except ollama.ResponseError as err:
        assert err.status_code == status and words in err.error, (status, words, err.status_code, err.error)
try:
    ollama.Client(host=BASE).list()
    raise AssertionError("no key accepted")
except ollama.ResponseError as err:
    assert err.status_code == 401
print("ollama: ok")
