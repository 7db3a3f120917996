"""Graceful shutdown of `owl serve` (smollm2, --parallel 2, a short --shutdown-grace).

    python shutdown_checks.py BASE_URL API_KEY

Opens two long streams (the official `openai` client's chat stream, and a raw
/v1/completions SSE stream to see the `[DONE]` line) that hold both slots, queues a third
request behind them, prints `streaming` and waits: the test then sends SIGTERM. After the
grace period every open stream must end with a final chunk (finish_reason "cancelled", then
`[DONE]`), and the waiting request must get 503 `shutting_down`. Prints `shutdown: ok`.
"""

import json
import sys
import threading
import time

import httpx
from openai import OpenAI

BASE, KEY = sys.argv[1], sys.argv[2]
MODEL = "smollm2"
# smollm2's end-of-text and end-of-turn tokens: the replies must outlast the grace period.
NO_EOS = {"0": -100, "2": -100}
HEADERS = {"Authorization": f"Bearer {KEY}"}

results = {}
ready = {"chat": threading.Event(), "completion": threading.Event()}


def chat_stream():
    c = OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=120)
    s = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell a long story."}],
                                  max_tokens=900, temperature=0, logit_bias=NO_EOS, stream=True)
    pieces, reason = 0, None
    for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            ready["chat"].set()
        if chunk.choices and chunk.choices[0].finish_reason:
            reason = chunk.choices[0].finish_reason
    results["chat"] = (pieces, reason)


def completion_stream():
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 900, "temperature": 0,
            "logit_bias": NO_EOS, "stream": True}
    data = []
    with httpx.stream("POST", f"{BASE}/v1/completions", json=body, headers=HEADERS, timeout=120) as r:
        assert r.status_code == 200, r.status_code
        for line in r.iter_lines():
            if line.startswith("data: "):
                data.append(line[len("data: "):])
                ready["completion"].set()
    results["completion"] = data


def queued():
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    r = httpx.post(f"{BASE}/v1/chat/completions", json=body, headers=HEADERS, timeout=120)
    results["queued"] = (r.status_code, r.json())


def queue_depth():
    text = httpx.get(f"{BASE}/metrics", headers=HEADERS, timeout=10).text
    line = next(l for l in text.splitlines() if l.startswith("owl_queue_depth"))
    return float(line.split()[-1])


streams = [threading.Thread(target=chat_stream), threading.Thread(target=completion_stream)]
for t in streams:
    t.start()
for name, event in ready.items():
    assert event.wait(120), f"{name}: no first token"
waiting = threading.Thread(target=queued)
waiting.start()
deadline = time.time() + 30
while queue_depth() < 1:
    assert time.time() < deadline, "the third request never queued"
    time.sleep(0.05)
print("streaming", flush=True)

for t in streams + [waiting]:
    t.join(60)
    assert not t.is_alive(), "a request is still open after the shutdown"

pieces, reason = results["chat"]
assert pieces > 0 and reason == "cancelled", results["chat"]
data = results["completion"]
assert data[-1] == "[DONE]", data[-3:]
last = json.loads(data[-2])
assert last["choices"][0]["finish_reason"] == "cancelled", last
assert len(data) > 3, data
status, body = results["queued"]
assert status == 503 and body["error"]["code"] == "shutting_down", (status, body)
print(f"shutdown: ok ({pieces} chat pieces, {len(data) - 2} completion pieces before the end)")
