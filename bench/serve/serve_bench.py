"""owl serve against llama.cpp's llama-server under the same load (bench/serve/run.sh runs it).

Both servers get the same GGUF, threads and parallel slots. For each number of concurrent
clients, every client sends its requests one after another: POST /v1/completions, streamed,
greedy, a prompt of its own (no shared prefix: this measures batching, not the prefix
cache), and exactly --max-tokens generated (end-of-generation tokens banned by
llama.cpp's `ignore_eos` request field, which owl takes too; --eos adds a `logit_bias`
ban). Measured per run:

- aggregate generated tokens/s: every completion token of every request, over the wall
  time from the first request sent to the last stream ended;
- time to first token (TTFT): from sending a request to its first streamed token, p50 and
  p95 over all requests (queueing included, as a client sees it).

The two servers alternate run by run (owl, llama.cpp, owl, ...), so that drift of a noisy
machine falls on both. Prints one table; --json writes every run.
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import httpx

WORDS = ("the owl watched the river in the evening light while the village slept and the "
         "wind carried the smell of rain across the fields toward the old stone bridge").split()


def prompt_for(run, client, request, words):
    # Unique from the first tokens on, in every run, so that neither server reuses a cached
    # prefix (llama-server keeps earlier prompts' KV in host memory, --cache-ram).
    body = " ".join(WORDS[(run * 5 + client * 7 + request * 3 + i) % len(WORDS)] for i in range(words))
    return f"Note {run}.{client}.{request}: {body}. Continue the story:"


async def one_request(http, url, model, prompt, max_tokens, eos_ids):
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if eos_ids:
        body["logit_bias"] = {str(t): -100 for t in eos_ids}
    sent = time.perf_counter()
    first = None
    tokens = None
    chunks = 0
    async with http.stream("POST", f"{url}/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices") or []:
                if choice.get("text"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter()
            usage = event.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                tokens = usage["completion_tokens"]
    ended = time.perf_counter()
    if first is None:
        raise RuntimeError(f"{url}: a stream without any text")
    return {"ttft": first - sent, "tokens": tokens if tokens is not None else chunks, "end": ended}


async def run_load(run, url, model, clients, per_client, max_tokens, prompt_words, eos_ids):
    # A new connection per request: llama-server closes some kept-alive connections between
    # requests without saying so, which a reused connection reports as "Server disconnected
    # without sending a response". Both servers are measured the same way.
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        started = time.perf_counter()

        async def client(c):
            out = []
            for r in range(per_client):
                out.append(await one_request(http, url, model, prompt_for(run, c, r, prompt_words), max_tokens, eos_ids))
            return out

        results = [x for xs in await asyncio.gather(*(client(c) for c in range(clients))) for x in xs]
    wall = max(x["end"] for x in results) - started
    ttfts = sorted(x["ttft"] for x in results)
    tokens = sum(x["tokens"] for x in results)
    short = [x["tokens"] for x in results if x["tokens"] != max_tokens]
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "short_replies": len(short),
    }


def percentile(sorted_values, p):
    # Nearest-rank percentile.
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def wait_healthy(url, proc, name, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: {name} exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    sys.exit(f"error: {name} was not ready after {timeout} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--owl", required=True, help="the owl binary")
    ap.add_argument("--llama-server", required=True, help="the llama-server binary")
    ap.add_argument("--model", required=True, help="a GGUF file")
    ap.add_argument("--name", default="model", help="the model name owl serves it as")
    ap.add_argument("--clients", default="1,8,32", help="concurrent clients per run (comma-separated)")
    ap.add_argument("--requests", type=int, default=2, help="requests per client per run")
    ap.add_argument("--reps", type=int, default=2, help="runs per server and client count")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=1024, help="context per sequence")
    ap.add_argument("--eos", default="", help="extra token ids to ban through logit_bias (comma-separated)")
    ap.add_argument("--json", help="write every run here")
    a = ap.parse_args()

    owl_url, llama_url = "http://127.0.0.1:18431", "http://127.0.0.1:18432"
    clients_list = [int(c) for c in a.clients.split(",")]
    logs = {}
    procs = {}
    try:
        logs["owl"] = open("/tmp/bench-serve-owl.log", "w")
        procs["owl"] = subprocess.Popen(
            [a.owl, "serve", a.model, "--name", a.name, "--port", owl_url.rsplit(":", 1)[1],
             "-t", str(a.threads), "--parallel", str(a.parallel), "-c", str(a.ctx), "--queue", "256"],
            stdout=logs["owl"], stderr=subprocess.STDOUT)
        logs["llama.cpp"] = open("/tmp/bench-serve-llama.log", "w")
        # llama-server's -c is the whole KV pool, shared by its -np slots.
        procs["llama.cpp"] = subprocess.Popen(
            [a.llama_server, "-m", a.model, "--host", "127.0.0.1", "--port", llama_url.rsplit(":", 1)[1],
             "-t", str(a.threads), "-tb", str(a.threads), "-np", str(a.parallel),
             "-c", str(a.ctx * a.parallel), "--no-webui",
             # One HTTP thread per connection, as a client count above its default (slots + 2)
             # otherwise gets connections dropped: this measures inference, not the HTTP pool.
             "--threads-http", str(max(clients_list) + 4)],
            stdout=logs["llama.cpp"], stderr=subprocess.STDOUT)
        wait_healthy(owl_url, procs["owl"], "owl serve")
        wait_healthy(llama_url, procs["llama.cpp"], "llama-server")
        eos_ids = [int(t) for t in a.eos.split(",") if t]
        urls = {"owl": owl_url, "llama.cpp": llama_url}
        for name, url in urls.items():  # warm-up: page the weights in, start the threads
            asyncio.run(run_load(0, url, a.name, 2, 1, 8, a.prompt_words, eos_ids))
        runs = []
        for clients in clients_list:
            for rep in range(a.reps):
                for name, url in urls.items():
                    r = asyncio.run(run_load(len(runs) + 1, url, a.name, clients, a.requests, a.max_tokens, a.prompt_words, eos_ids))
                    r.update(server=name, rep=rep)
                    runs.append(r)
                    print(f"{name:9} clients {clients:3} rep {rep}: {r['tokens_per_s']:7.1f} tok/s, TTFT p50 "
                          f"{r['ttft_p50_s']:.2f} s p95 {r['ttft_p95_s']:.2f} s ({r['requests']} requests, "
                          f"{r['tokens']} tokens, {r['short_replies']} short)", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    print_table(runs, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "runs": runs}, f, indent=1)


def print_table(runs, a):
    print(f"\nbench/serve: {os.path.basename(a.model)}, {a.threads} threads, {a.parallel} slots, "
          f"{a.requests} requests per client, prompt ~{a.prompt_words} words, {a.max_tokens} tokens each; "
          f"best of {a.reps} runs per cell\n")
    print("| clients | owl tok/s | llama.cpp tok/s | owl / llama.cpp | owl TTFT p50 / p95 (s) | llama.cpp TTFT p50 / p95 (s) |")
    print("|---|---|---|---|---|---|")
    for clients in sorted({r["clients"] for r in runs}):
        best = {}
        for name in ("owl", "llama.cpp"):
            mine = [r for r in runs if r["server"] == name and r["clients"] == clients]
            best[name] = max(mine, key=lambda r: r["tokens_per_s"])
        o, l = best["owl"], best["llama.cpp"]
        print(f"| {clients} | {o['tokens_per_s']:.1f} | {l['tokens_per_s']:.1f} | "
              f"{o['tokens_per_s'] / l['tokens_per_s']:.2f}× | {o['ttft_p50_s']:.2f} / {o['ttft_p95_s']:.2f} | "
              f"{l['ttft_p50_s']:.2f} / {l['ttft_p95_s']:.2f} |")


if __name__ == "__main__":
    main()
