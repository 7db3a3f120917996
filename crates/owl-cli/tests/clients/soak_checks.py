"""A bounded soak of `owl serve` (smollm2): many short requests of every route, streamed and
not, with clients that disconnect mid-stream and bad requests mixed in.

    python soak_checks.py BASE_URL API_KEY SERVER_PID [REQUESTS]

Sends REQUESTS (default 2000) requests, 16 at a time, in a fixed pseudo-random mix. Every
answer must be what its kind expects (200 with a reply, 400/401/413 for the bad ones).
The server's resident memory (VmRSS of SERVER_PID) after the first 100 requests and after
all of them, each taken once the server is idle, must be within 5 % of each other. Prints
`soak: ok` with the numbers.
"""

import asyncio
import json
import random
import sys
import time

import httpx

BASE, KEY, PID = sys.argv[1], sys.argv[2], int(sys.argv[3])
TOTAL = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
WARM = 100
MODEL = "smollm2"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOPICS = ["owls", "the sea", "bread", "mountains", "a red bicycle", "prime numbers", "rain", "chess"]


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def prompt(rng):
    # Lengths from a few tokens to a few hundred, so that the first 100 requests already
    # reach the deepest cache positions the rest will use.
    words = " ".join(rng.choice(TOPICS) for _ in range(rng.choice([1, 4, 12, 30])))
    return f"Say something about {words}."


async def sse_lines(client, path, body, disconnect):
    """Reads an SSE or NDJSON stream; with `disconnect`, goes away after the first line."""
    lines = []
    async with client.stream("POST", path, json=body, headers=AUTH) as r:
        assert r.status_code == 200, (path, r.status_code, await r.aread())
        async for line in r.aiter_lines():
            if line.strip():
                lines.append(line)
                if disconnect:
                    return lines
    return lines


async def one(client, i):
    rng = random.Random(i)
    kind = rng.choices(
        ["chat", "chat_stream", "disconnect", "completion", "ollama", "anthropic", "embed", "bad"],
        [30, 15, 15, 10, 10, 8, 5, 7],
    )[0]
    max_tokens = rng.randint(1, 4)
    messages = [{"role": "user", "content": prompt(rng)}]
    sampling = {"temperature": rng.choice([0, 0.7]), "seed": i}
    if kind == "chat":
        r = await client.post("/v1/chat/completions", headers=AUTH,
                              json={"model": MODEL, "messages": messages, "max_tokens": max_tokens, **sampling})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= max_tokens
    elif kind in ("chat_stream", "disconnect"):
        body = {"model": MODEL, "messages": messages, "max_tokens": 200 if kind == "disconnect" else max_tokens,
                "stream": True, **sampling}
        lines = await sse_lines(client, "/v1/chat/completions", body, kind == "disconnect")
        assert lines and (kind == "disconnect" or lines[-1] == "data: [DONE]"), lines[-2:]
    elif kind == "completion":
        r = await client.post("/v1/completions", headers=AUTH,
                              json={"model": MODEL, "prompt": prompt(rng), "max_tokens": max_tokens, **sampling})
        assert r.status_code == 200, r.text
    elif kind == "ollama":
        body = {"model": MODEL, "messages": messages, "stream": rng.random() < 0.5,
                "options": {"num_predict": max_tokens, **sampling}}
        if body["stream"]:
            lines = await sse_lines(client, "/api/chat", body, rng.random() < 0.3)
            assert lines
        else:
            r = await client.post("/api/chat", headers=AUTH, json=body)
            assert r.status_code == 200 and r.json()["done"], r.text
    elif kind == "anthropic":
        body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "stream": rng.random() < 0.5}
        if body["stream"]:
            lines = await sse_lines(client, "/v1/messages", body, False)
            assert any("message_stop" in l for l in lines), lines[-3:]
        else:
            r = await client.post("/v1/messages", headers=AUTH, json=body)
            assert r.status_code == 200 and r.json()["type"] == "message", r.text
    elif kind == "embed":
        r = await client.post("/v1/embeddings", headers=AUTH, json={"model": MODEL, "input": prompt(rng)})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) > 0, r.text
    else:
        bad = rng.choice(["field", "key", "size", "json"])
        if bad == "field":
            r = await client.post("/v1/chat/completions", headers=AUTH,
                                  json={"model": MODEL, "messages": messages, "temperature": "hot"})
            assert r.status_code == 400 and r.json()["error"]["param"] == "temperature", r.text
        elif bad == "key":
            r = await client.post("/v1/chat/completions", headers={"Authorization": "Bearer wrong"},
                                  json={"model": MODEL, "messages": messages})
            assert r.status_code == 401, r.text
        elif bad == "size":
            r = await client.post("/v1/completions", headers=AUTH,
                                  content=b'{"prompt": "' + b"x" * (1 << 20) + b'"}')
            assert r.status_code == 413, r.status_code
        else:
            r = await client.post("/v1/completions", headers={**AUTH, "content-type": "application/json"},
                                  content=b'{"prompt": [1, 2,')
            assert r.status_code == 400, r.text
    return kind


async def idle(client):
    """Waits until no sequence runs or waits (a disconnect ends its sequence within a step)."""
    deadline = time.time() + 60
    while True:
        text = (await client.get("/metrics", headers=AUTH)).text
        gauges = {l.split()[0]: float(l.split()[-1]) for l in text.splitlines()
                  if l.startswith(("owl_queue_depth", "owl_active_sequences"))}
        if gauges and all(v == 0 for v in gauges.values()):
            return
        assert time.time() < deadline, gauges
        await asyncio.sleep(0.05)


async def run(lo, hi, client, counts):
    sem = asyncio.Semaphore(16)

    async def guarded(i):
        async with sem:
            kind = await one(client, i)
            counts[kind] = counts.get(kind, 0) + 1

    await asyncio.gather(*(guarded(i) for i in range(lo, hi)))
    await idle(client)


async def main():
    counts = {}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=BASE, timeout=300, limits=limits) as client:
        started = time.time()
        await run(0, WARM, client, counts)
        warm = rss_kib()
        await run(WARM, TOTAL, client, counts)
        after = rss_kib()
        took = time.time() - started
    growth = (after - warm) / warm
    print(f"soak: rss after {WARM} = {warm / 1024:.1f} MiB, after {TOTAL} = {after / 1024:.1f} MiB "
          f"({growth * 100:+.2f} %), {TOTAL / took:.1f} requests/s, mix {json.dumps(counts, sort_keys=True)}")
    assert abs(growth) <= 0.05, f"RSS moved {growth * 100:+.2f} % over the soak"
    print("soak: ok")


asyncio.run(main())
