"""The official `openai` Python client against a running `owl serve` (smollm2).

    python openai_checks.py BASE_URL API_KEY CHECK...

CHECK is any of: basics, structured, errors, concurrency, cancel. Each asserts; the script exits
non-zero (with the traceback) on the first failure and prints one line per passed check.
"""

import asyncio
import json
import re
import socket
import sys
import time

import httpx
import jsonschema
import openai
import pydantic
from openai import AsyncOpenAI, OpenAI

BASE, KEY = sys.argv[1], sys.argv[2]
CHECKS = sys.argv[3:]
MODEL = "smollm2"


def client(key=KEY, **kw):
    return OpenAI(base_url=f"{BASE}/v1", api_key=key, max_retries=0, timeout=120, **kw)


def greedy_chat(c, content, max_tokens=12, **kw):
    kw.setdefault("temperature", 0)
    return c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        **kw,
    )


def check_basics():
    c = client()
    ids = [m.id for m in c.models.list().data]
    assert ids == [MODEL], ids
    assert c.models.retrieve(MODEL).id == MODEL

    # Chat, not streamed, with logprobs: one entry per generated token, the chosen token
    # the most likely one (greedy), alternatives in descending order.
    r = greedy_chat(c, "Name a colour.", logprobs=True, top_logprobs=3)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == MODEL
    assert choice.message.role == "assistant" and choice.message.content, r
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    entries = choice.logprobs.content
    assert len(entries) == r.usage.completion_tokens > 0, (len(entries), r.usage)
    for e in entries:
        assert len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True), tops
        assert abs(e.logprob - tops[0]) < 1e-6 and e.token == e.top_logprobs[0].token, e
        assert e.logprob <= 0 and bytes(e.bytes).decode("utf-8", "replace") == e.token
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0

    # The same request streamed: the same text, a role first, a finish reason last, usage.
    stream = greedy_chat(c, "Name a colour.", stream=True, stream_options={"include_usage": True},
                         logprobs=True)
    text, roles, reasons, usage, lp = "", [], [], None, 0
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        d = chunk.choices[0].delta
        roles += [d.role] if d.role else []
        text += d.content or ""
        if chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            lp += len(chunk.choices[0].logprobs.content)
        if chunk.choices[0].finish_reason:
            reasons.append(chunk.choices[0].finish_reason)
    assert roles == ["assistant"], roles
    assert text == choice.message.content, (text, choice.message.content)
    assert reasons == [choice.finish_reason], reasons
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage
    assert lp == usage.completion_tokens, (lp, usage)

    # Stop strings end the reply before them; max_completion_tokens counts like max_tokens.
    full = greedy_chat(c, "Count from 1 to 10, separated by commas.", max_tokens=30).choices[0].message.content
    assert "," in full, full
    cut = greedy_chat(c, "Count from 1 to 10, separated by commas.", max_tokens=30, stop=[","])
    assert cut.choices[0].message.content == full.split(",")[0], (cut.choices[0].message.content, full)
    assert cut.choices[0].finish_reason == "stop"
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                  max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens <= 3

    # n choices, system and earlier turns, a seed: the same seed gives the same choices.
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Tell me a fruit."},
    ]
    a = c.chat.completions.create(model=MODEL, messages=msgs, n=2, seed=7, temperature=1.0, max_tokens=8)
    b = c.chat.completions.create(model=MODEL, messages=msgs, n=2, seed=7, temperature=1.0, max_tokens=8)
    assert [x.index for x in a.choices] == [0, 1]
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]

    # Legacy completions: echo, logprobs, token-id prompts.
    p = "The capital of France is"
    r = c.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0, echo=True)
    assert r.object == "text_completion" and r.choices[0].text.startswith(p), r.choices[0].text
    r2 = c.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0, logprobs=2)
    assert r.choices[0].text == p + r2.choices[0].text
    lp = r2.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r2.usage.completion_tokens
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == r2.choices[0].text
    streamed = "".join(ch.choices[0].text for ch in
                       c.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0, stream=True)
                       if ch.choices)
    assert streamed == r2.choices[0].text, (streamed, r2.choices[0].text)

    # Embeddings: unit length, the same text twice gives the same vector, another text
    # another one; the client's default base64 and floats agree.
    texts = ["The cat sat on the mat.", "The cat sat on the mat.", "Quarterly revenue grew by four percent."]
    e = c.embeddings.create(model=MODEL, input=texts)
    fl = c.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    vs = [d.embedding for d in e.data]
    assert [d.index for d in e.data] == [0, 1, 2] and len(vs[0]) == 576, len(vs[0])
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    for v in vs:
        assert abs(dot(v, v) - 1) < 1e-4
    assert dot(vs[0], vs[1]) > 0.99999 and dot(vs[0], vs[2]) < 0.99, (dot(vs[0], vs[1]), dot(vs[0], vs[2]))
    assert max(abs(x - y) for x, y in zip(vs[2], fl.data[2].embedding)) < 1e-6
    assert e.usage.prompt_tokens == e.usage.total_tokens > 10
    try:
        c.embeddings.create(model=MODEL, input=[])
        raise AssertionError("empty input accepted")
    except openai.BadRequestError as err:
        assert err.body["param"] == "input", err.body

    # /metrics (Prometheus text, behind the key): requests by route and status, tokens,
    # prefix-cache hits, queue and slots, latency histograms.
    assert httpx.get(f"{BASE}/metrics").status_code == 401
    text = httpx.get(f"{BASE}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['owl_requests_total{route="/v1/chat/completions",status="200"}'] == 7, text
    assert values['owl_requests_total{route="/v1/completions",status="200"}'] == 3, text
    assert values["owl_prompt_tokens_cached_total"] > 0 and values["owl_generated_tokens_total"] > 0, text
    assert 0 < values["owl_prefix_cache_hit_ratio"] < 1, text
    assert values["owl_queue_depth"] == 0 and values["owl_active_sequences"] == 0, text
    assert values["owl_time_to_first_token_seconds_count"] >= 10, text
    assert values["owl_inter_token_seconds_count"] > 0, text
    assert values['owl_time_to_first_token_seconds_bucket{le="+Inf"}'] == values["owl_time_to_first_token_seconds_count"]

    # llama.cpp's ignore_eos: a reply that ends by itself runs to max_tokens instead.
    short = greedy_chat(c, "Say hi.", max_tokens=120)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 120, short.usage
    long = greedy_chat(c, "Say hi.", max_tokens=120, extra_body={"ignore_eos": True})
    assert long.choices[0].finish_reason == "length" and long.usage.completion_tokens == 120, long.usage
    assert long.choices[0].message.content.startswith(short.choices[0].message.content), long.choices[0].message
    print("basics: ok")


def read_http_response(s):
    """One HTTP/1.1 response with a Content-Length from a socket: (status line, lower-cased
    headers, body); an empty status line if the server closed the connection first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"", {}, buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(b":") for line in lines)}
    n = int(headers.get(b"content-length", b"0"))
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=30)
    country: str = pydantic.Field(max_length=30)
    population_millions: float


def check_structured():
    c = client()
    ask = [{"role": "user", "content": "Describe a person as JSON."}]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}

    # response_format json_schema, strict, n=2 sampled at temperature 1: every choice parses
    # and validates.
    r = c.chat.completions.create(model=MODEL, messages=ask, response_format=fmt, n=2, temperature=1.0,
                                  seed=11, max_tokens=200)
    assert len(r.choices) == 2
    for ch in r.choices:
        assert ch.finish_reason == "stop", (ch.finish_reason, ch.message.content)
        jsonschema.validate(json.loads(ch.message.content), PERSON)

    # Streamed: the deltas assemble into a valid object.
    text = ""
    for chunk in c.chat.completions.create(model=MODEL, messages=ask, response_format=fmt, temperature=0,
                                           max_tokens=200, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    jsonschema.validate(json.loads(text), PERSON)

    # The client's own structured-output helper: a pydantic model in, a parsed object out.
    parsed = c.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about Paris."}], response_format=City,
        temperature=0, max_tokens=200)
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and city.name, parsed.choices[0].message

    # json_object: any object; llama.cpp's json_schema field; vLLM's guided_json.
    r = greedy_chat(c, "List two colours as a JSON object.", max_tokens=200,
                    response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop", r.choices[0]
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    for field in ["json_schema", "guided_json"]:
        r = greedy_chat(c, "A person, please.", max_tokens=200, extra_body={field: PERSON})
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)

    # Legacy completions with a regex (vLLM's guided_regex), a GBNF grammar (llama.cpp's
    # grammar) and a choice list.
    r = c.completions.create(model=MODEL, prompt="The year the war ended was", max_tokens=20, temperature=0,
                             extra_body={"guided_regex": r" [12][0-9]{3}\."})
    assert re.fullmatch(r" [12][0-9]{3}\.", r.choices[0].text), r.choices[0].text
    gbnf = 'root ::= answer "!"\nanswer ::= "yes" | "no"\n'
    r = greedy_chat(c, "Is the sky blue?", max_tokens=10, extra_body={"grammar": gbnf})
    assert r.choices[0].message.content in ("yes!", "no!"), r.choices[0].message.content
    r = greedy_chat(c, "Pick a fruit.", max_tokens=10, extra_body={"guided_choice": ["apple", "pear", "fig"]})
    assert r.choices[0].message.content in ("apple", "pear", "fig"), r.choices[0].message.content

    # Bad grammars are 400s naming the parameter.
    bad = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}},
         "response_format"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"extra_body": {"guided_regex": "(unclosed"}}, "guided_regex"),
        ({"extra_body": {"grammar": "root ::= missing"}}, "grammar"),
        ({"response_format": {"type": "json_object"}, "extra_body": {"guided_regex": "a"}}, "guided_regex"),
    ]
    for kw, param in bad:
        try:
            greedy_chat(c, "x", **kw)
            raise AssertionError(f"{kw} accepted")
        except openai.BadRequestError as e:
            assert e.body["param"] == param, (kw, e.body)
    print("structured: ok")


def check_errors():
    c = client()
    # A bad field: 400 naming it.
    try:
        greedy_chat(c, "x", temperature=7)
        raise AssertionError("temperature 7 accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "temperature", e.body
    try:
        c.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])
        raise AssertionError("role wizard accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "messages[0].role", e.body
    try:
        greedy_chat(c, "x", top_logprobs=3)
        raise AssertionError("top_logprobs without logprobs accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "top_logprobs", e.body
    # An unknown model: 404.
    try:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body
    # An oversize body: 413.
    try:
        greedy_chat(c, "a" * (9 << 20))
        raise AssertionError("oversize body accepted")
    except openai.APIStatusError as e:
        assert e.status_code == 413, e.status_code
    # The same over a bare socket, as a client without retries sees it: the whole 413
    # arrives (the server reads the rest of the body before it closes, so no reset eats the
    # answer) and says `Connection: close`.
    host, port = BASE.split("//")[1].split(":")
    body = b'{"prompt": "' + b"a" * (9 << 20) + b'"}'
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(10):
        with socket.create_connection((host, int(port)), timeout=30) as s:
            try:
                s.sendall(head + body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the answer may come before the upload ends; it must still be readable
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        status, _, rest = answer.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"\r\nconnection: close\r\n" in rest.lower(), answer[:300]
        assert b'"error"' in rest, answer[:300]
    # Early answers (a wrong key, no such route) that leave the body unread: on a kept-alive
    # connection, the answer says `Connection: close` or the connection carries the next
    # request; never a silent close that a reusing client meets as "Server disconnected".
    for path, key, size, want in [("/v1/chat/completions", "wrong-key", 100, b"401"),
                                  ("/v1/chat/completions", "wrong-key", 300_000, b"401"),
                                  ("/v1/no-such-route", KEY, 100, b"404"),
                                  ("/v1/completions", KEY, 2000, b"400")]:
        body = b'{"prompt": "' + b"a" * size + b'", "max_tokens": -1}'
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection((host, int(port)), timeout=30) as s:
            try:
                s.sendall(head + body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            status, headers, rest = read_http_response(s)
            assert status.startswith(b"HTTP/1.1 " + want), (path, status, rest[:200])
            if headers.get(b"connection") == b"close":
                continue
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status, _, rest = read_http_response(s)
            assert status.startswith(b"HTTP/1.1 200"), (path, size, "no close, yet the next request failed", status)
    # A wrong key: 401; no key at all (the client refuses to send none): 401 too; the
    # x-api-key header works as well; /health needs no key.
    try:
        client(key="wrong-key").models.list()
        raise AssertionError("a wrong key accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.body["code"] == "invalid_api_key", e.body
    assert httpx.get(f"{BASE}/v1/models").status_code == 401
    assert httpx.get(f"{BASE}/v1/models", headers={"x-api-key": KEY}).status_code == 200
    assert httpx.get(f"{BASE}/health").status_code == 200
    # A prompt longer than the context, and max_tokens beyond it: 400, never truncated.
    try:
        greedy_chat(c, "word " * 3000)
        raise AssertionError("over-long prompt accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "context_length_exceeded", e.body
    try:
        greedy_chat(c, "Hi", max_tokens=100000)
        raise AssertionError("max_tokens beyond the context accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "context_length_exceeded" and e.body["param"] == "max_tokens", e.body
    print("errors: ok")


PROMPTS = [
    "Write a short poem about the sea.",
    "What is 12 times 12?",
    "List three animals that live in the desert.",
    "Explain gravity to a child.",
    "Give me a name for a cat.",
    "What colour is the sky at sunset?",
    "Say something kind.",
    "Describe a tree in one sentence.",
]


def check_concurrency():
    c = client()
    requests = [PROMPTS[i % len(PROMPTS)] for i in range(32)]
    one_at_a_time = [greedy_chat(c, p, max_tokens=16).choices[0].message.content for p in PROMPTS]

    async def stream_one(ac, prompt):
        s = await ac.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=16, temperature=0,
            stream=True,
        )
        text, reason = "", None
        async for chunk in s:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
        return text, reason

    async def all_at_once():
        ac = AsyncOpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=300)
        return await asyncio.gather(*(stream_one(ac, p) for p in requests))

    results = asyncio.run(all_at_once())
    for i, (text, reason) in enumerate(results):
        assert reason in ("stop", "length"), (i, reason)
        want = one_at_a_time[i % len(PROMPTS)]
        assert text == want, f"request {i}: concurrent {text!r} != alone {want!r}"
    print("concurrency: ok (32 streams identical to one at a time)")


def check_cancel():
    # The server runs --parallel 1 --queue 0: while a sequence holds the slot, another
    # request is refused (429). A stream closed early must free the slot at once.
    c = client()
    s = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell a long story."}],
                                  max_tokens=900, temperature=0, stream=True)
    got = 0
    for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got == 3:
                break
    # While it runs, the slot is taken.
    busy = None
    try:
        greedy_chat(c, "Hi", max_tokens=2)
    except openai.RateLimitError as e:
        busy = e
    assert busy is not None and busy.status_code == 429, "a second request got in beside the first"
    s.close()
    started = time.time()
    while True:
        try:
            r = greedy_chat(c, "Hi", max_tokens=2)
            break
        except openai.RateLimitError:
            assert time.time() - started < 3, "the cancelled stream still holds its slot"
            time.sleep(0.02)
    assert r.choices[0].message.content is not None
    print(f"cancel: ok (slot free after {time.time() - started:.2f} s)")


for name in CHECKS:
    globals()[f"check_{name}"]()
