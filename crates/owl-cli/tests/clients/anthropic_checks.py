"""The official `anthropic` Python client against a running `owl serve` (smollm2).

    python anthropic_checks.py BASE_URL API_KEY

Asserts; exits non-zero with the traceback on the first failure, prints `anthropic: ok`.
"""

import sys

import anthropic

BASE, KEY = sys.argv[1], sys.argv[2]
c = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
M = "smollm2"
msgs = [{"role": "user", "content": "Name a fruit."}]
# This client has no sampling parameters any more; older ones sent temperature, which the
# server still takes (greedy here, so that replies can be compared).
G = {"extra_body": {"temperature": 0}}

r = c.messages.create(model=M, max_tokens=12, **G, system="You are terse.", messages=msgs)
assert r.type == "message" and r.role == "assistant" and r.model == M, r
assert len(r.content) == 1 and r.content[0].type == "text" and r.content[0].text, r.content
assert r.stop_reason in ("end_turn", "max_tokens") and 0 < r.usage.output_tokens <= 12, r
assert r.usage.input_tokens > 10

# Streamed: the same text, Anthropic's event sequence, the final message and usage.
kinds = []
with c.messages.stream(model=M, max_tokens=12, **G, system="You are terse.", messages=msgs) as s:
    for event in s:
        kinds.append(event.type)
    final = s.get_final_message()
assert final.content[0].text == r.content[0].text, (final.content, r.content)
assert final.stop_reason == r.stop_reason and final.usage.output_tokens == r.usage.output_tokens, final
assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds, kinds

# Content blocks, earlier turns, stop sequences.
blocks = [{"role": "user", "content": [{"type": "text", "text": "Count from 1 to 10, separated by commas."}]}]
full = c.messages.create(model=M, max_tokens=30, **G, messages=blocks).content[0].text
assert "," in full, full
cut = c.messages.create(model=M, max_tokens=30, **G, messages=blocks, stop_sequences=[","])
assert cut.content[0].text == full.split(",")[0] and cut.stop_reason == "stop_sequence" and cut.stop_sequence == ","

# Errors in Anthropic's shape.
for call, cls, words in [
    (lambda: c.messages.create(model=M, max_tokens=8, extra_body={"temperature": 1.5}, messages=msgs),
     anthropic.BadRequestError, "temperature"),
    (lambda: c.messages.create(model=M, max_tokens=8, messages=[{"role": "system", "content": "x"}]),
     anthropic.BadRequestError, "role"),
    (lambda: c.messages.create(model="claude-x", max_tokens=8, messages=msgs), anthropic.NotFoundError, "claude-x"),
    (lambda: c.messages.create(model=M, max_tokens=5000, messages=msgs), anthropic.BadRequestError, "max_tokens"),
    (lambda: anthropic.Anthropic(base_url=BASE, api_key="nope", max_retries=0).messages.create(
        model=M, max_tokens=8, messages=msgs), anthropic.AuthenticationError, ""),
]:
    try:
        call()
        raise AssertionError(f"accepted: {words}")
    except cls as err:
        assert words in str(err), (words, str(err))
print("anthropic: ok")
