"""llama.cpp side of bench/compare: one measurement per process, result as one JSON line.

Runs inside the venv that bench/compare/setup_venv.sh builds (llama-cpp-python, pinned,
compiled with -DGGML_NATIVE=ON). It talks to llama.cpp through llama-cpp-python's thin
ctypes layer (`llama_cpp.llama_*`), not through the high-level `Llama` class, so that what
is timed is what llama-bench times and nothing more (no logits copied into numpy arrays,
no Python-side token bookkeeping).

Modes:

  bench        llama-bench's procedure (tools/llama-bench/llama-bench.cpp, vendored in
               llama-cpp-python's sdist):
               - one context per test with n_ctx = n_prompt + n_gen, n_batch 2048,
                 n_ubatch 512, f16 KV cache, flash attention "auto" (llama-bench defaults);
               - ppN: from an empty KV cache, N tokens (BOS first when the model adds one,
                 then random ids) decoded in batches of n_batch, output of the last only;
               - tgN: from an empty KV cache, N single-token decodes (BOS first, then
                 random ids), synchronising after each;
               - `-d D` (llama-bench's depth): every run starts from a cache holding D
                 tokens (BOS and random ids, processed untimed before each run), tests
                 named "pp512 @ d4096"; n_ctx grows by D;
               - one untimed warm-up run per test (the whole ppN; tg: 1 token), then
                 `--reps` timed runs, KV cache cleared before each.
               Prints {"results":[{"test","tokens_per_s","samples_ns",...}], "rss":{...}}.

  first-token  load the model, tokenize a short prompt, decode it, pick the greedy next
               token. Prints monotonic timestamps (CLOCK_MONOTONIC is system-wide on
               Linux, so the parent can relate them to when it spawned this process).

Peak RSS is read from /proc/self/status: VmRSS once the Python interpreter, numpy and the
llama.cpp shared libraries are imported (the baseline the harness subtracts, since an
interpreter is not part of llama.cpp) and VmHWM at the end (the process's high-water mark).
"""

import argparse
import ctypes
import json
import random
import sys
import time

T_PROCESS_START = time.monotonic()  # before any heavy import

import llama_cpp as L  # noqa: E402  (after the timestamp on purpose)
import numpy as np  # noqa: E402  (llama_cpp imports it anyway)

T_IMPORTED = time.monotonic()

# llama-bench defaults (cmd_params_defaults in llama-bench.cpp).
N_BATCH = 2048
N_UBATCH = 512

GGML_LOG_LEVEL_ERROR = 3  # ggml.h enum ggml_log_level

FLASH_ATTN = {
    "auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def proc_status_kib(field):
    """A `kB` field of /proc/self/status (VmRSS, VmHWM), or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@L.llama_log_callback
def _quiet_log(level, text, user_data):
    # llama.cpp logs every tensor and buffer at load; only errors are worth passing on.
    if level == GGML_LOG_LEVEL_ERROR and text:
        sys.stderr.write(text.decode("utf-8", "replace"))


def fail(msg):
    print("error: " + msg, file=sys.stderr)
    sys.exit(1)


def load_model(path):
    params = L.llama_model_default_params()
    model = L.llama_model_load_from_file(path.encode(), params)
    if not model:
        fail(f"llama.cpp could not load {path}")
    return model


def new_context(model, n_ctx, threads, flash_attn):
    cp = L.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = min(N_BATCH, n_ctx) if n_ctx > 0 else N_BATCH
    cp.n_ubatch = min(N_UBATCH, cp.n_batch)
    cp.n_threads = threads
    cp.n_threads_batch = threads
    cp.flash_attn_type = FLASH_ATTN[flash_attn]
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        fail(f"llama.cpp could not create a context (n_ctx {n_ctx})")
    return ctx, cp.n_batch


def decode(ctx, tokens):
    arr = (L.llama_token * len(tokens))(*tokens)
    rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens)))
    if rc != 0:
        fail(f"llama_decode returned {rc} for a batch of {len(tokens)}")


def run_prompt(ctx, ids, n_batch):
    """llama-bench test_prompt: `ids` decoded in batches of n_batch."""
    for start in range(0, len(ids), n_batch):
        decode(ctx, ids[start:start + n_batch])
    L.llama_synchronize(ctx)


def run_gen(ctx, ids):
    """llama-bench test_gen: one decode per token, synchronised each time."""
    for tok in ids:
        decode(ctx, [tok])
        L.llama_synchronize(ctx)


def token_ids(rng, n, n_vocab, bos):
    """BOS (when the model adds one) then random ids, drawn before the clock starts."""
    ids = [rng.randrange(n_vocab) for _ in range(n)]
    if bos is not None and n > 0:
        ids[0] = bos
    return ids


def cmd_bench(a):
    model = load_model(a.model)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    bos = L.llama_vocab_bos(vocab) if L.llama_vocab_get_add_bos(vocab) else None
    rng = random.Random(a.seed)

    tests = [("pp", n, d) for d in a.n_depth for n in a.n_prompt if n > 0] + \
        [("tg", n, d) for d in a.n_depth for n in a.n_gen if n > 0]
    results = []
    for kind, n, depth in tests:
        # llama-bench: n_ctx = n_prompt + n_gen + n_depth for each test.
        ctx, n_batch = new_context(model, n + depth, a.threads, a.flash_attn)
        mem = L.llama_get_memory(ctx)

        def start():
            """An empty cache, then (untimed) `depth` tokens: BOS and random ids, as
            llama-bench's -d; the test's tokens follow at positions depth.."""
            L.llama_memory_clear(mem, False)
            if depth > 0:
                run_prompt(ctx, token_ids(rng, depth, n_vocab, bos), n_batch)
            return None if depth > 0 else bos

        if not a.no_warmup:
            first = start()
            if kind == "pp":
                run_prompt(ctx, token_ids(rng, n, n_vocab, first), n_batch)
            else:
                run_gen(ctx, token_ids(rng, 1, n_vocab, first))
        samples = []
        for _ in range(a.reps):
            first = start()
            ids = token_ids(rng, n, n_vocab, first)
            t0 = time.perf_counter_ns()
            if kind == "pp":
                run_prompt(ctx, ids, n_batch)
            else:
                run_gen(ctx, ids)
            samples.append(time.perf_counter_ns() - t0)
        L.llama_free(ctx)
        speeds = [n * 1e9 / s for s in samples]
        results.append({
            "test": f"{kind}{n}" + (f" @ d{depth}" if depth > 0 else ""),
            "tokens_per_s": sum(speeds) / len(speeds),
            "samples_ns": samples,
            "threads": a.threads,
        })
    L.llama_model_free(model)
    return {"results": results}


def cmd_first_token(a):
    t_load_start = time.monotonic()
    model = load_model(a.model)
    ctx, n_batch = new_context(model, a.ctx, a.threads, a.flash_attn)
    t_loaded = time.monotonic()
    vocab = L.llama_model_get_vocab(model)
    text = a.prompt.encode()
    buf = (L.llama_token * (len(text) + 8))()
    n = L.llama_tokenize(vocab, text, len(text), buf, len(buf), True, False)
    if n <= 0:
        fail(f"tokenizing the prompt gave {n}")
    ids = list(buf[:n])
    run_prompt(ctx, ids, n_batch)
    logits = L.llama_get_logits_ith(ctx, -1)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    if not logits:
        fail("llama.cpp returned no logits for the prompt's last token")
    best = int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())
    t_first = time.monotonic()
    piece = ctypes.create_string_buffer(64)
    m = L.llama_token_to_piece(vocab, best, piece, len(piece), 0, False)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return {
        "t_process_start": T_PROCESS_START,
        "t_imported": T_IMPORTED,
        "t_load_start": t_load_start,
        "t_loaded": t_loaded,
        "t_first_token": t_first,
        "prompt_tokens": n,
        "token_id": best,
        "token_text": piece.raw[:max(m, 0)].decode("utf-8", "replace"),
    }


def int_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("bench", "first-token"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--threads", type=int, required=True)
        s.add_argument("--flash-attn", choices=sorted(FLASH_ATTN), default="auto")
    b = sub.choices["bench"]
    b.add_argument("-p", "--n-prompt", type=int_list, default=[64, 512])
    b.add_argument("-n", "--n-gen", type=int_list, default=[128])
    b.add_argument("-d", "--n-depth", type=int_list, default=[0])
    b.add_argument("--reps", type=int, default=1)
    b.add_argument("--seed", type=int, default=1234)
    b.add_argument("--no-warmup", action="store_true")
    f = sub.choices["first-token"]
    f.add_argument("--prompt", required=True)
    f.add_argument("--ctx", type=int, default=4096)
    a = p.parse_args()
    if a.threads < 1:
        fail("--threads must be at least 1")

    rss_baseline = proc_status_kib("VmRSS")
    L.llama_log_set(_quiet_log, None)
    L.llama_backend_init()
    out = cmd_bench(a) if a.mode == "bench" else cmd_first_token(a)
    out["rss"] = {"baseline_kib": rss_baseline, "peak_kib": proc_status_kib("VmHWM")}
    out["llama_cpp_python"] = L.__version__
    out["system_info"] = L.llama_print_system_info().decode("utf-8", "replace").strip()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
