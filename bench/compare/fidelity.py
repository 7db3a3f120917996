"""Default-path fidelity: owl's and llama.cpp's KL divergence from the float32 reference.

For each demo model, over the same windows of a text (default: the GPL-3, Debian's
common-licenses), with llama-perplexity's scheme (windows of -c tokens from an empty cache,
BOS first where the model adds one, the second half scored):

1. `owl perplexity MODEL TEXT --f32-activations --save-logprobs REF` saves the reference:
   float32 activations against the dequantized weights, which match transformers to
   ~0.01 nats (docs/NUMERICS.md). The file is llama-perplexity's --kl-divergence-base
   format.
2. `owl perplexity MODEL TEXT --kl-divergence REF --json`: owl's default path (8-bit
   activations) against it.
3. llama.cpp (llama-cpp-python from the bench venv, the same GGUF file, llama-perplexity's
   defaults: f16 KV cache, flash attention auto, n_batch = n_ubatch = the window) runs the
   file's windows, and this script scores its logits against REF with llama-perplexity's
   own arithmetic (`log_softmax(n_vocab, logits, base_log_prob, tok, kld)` in
   tools/perplexity/perplexity.cpp), vectorised over the vocabulary.

Prints one row per model: mean KL, its 99th percentile, top-1 agreement and perplexity for
both tools, and the reference's perplexity as each side read it (the two must agree: they
read the same rows). Run it through fidelity.sh (which provides the venv).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

MODELS = ["smollm2", "gemma3", "qwen2.5-coder"]


def read_saved(path):
    """Header, tokens and a memory map of the rows of a --kl-divergence-base file."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            sys.exit(f"error: {path} is not a saved log-probabilities file")
        n_ctx, n_vocab, n_chunk = np.frombuffer(f.read(12), dtype="<i4")
    n_ctx, n_vocab, n_chunk = int(n_ctx), int(n_vocab), int(n_chunk)
    tokens = np.memmap(path, dtype="<i4", mode="r", offset=20, shape=(n_chunk * n_ctx,))
    nv = 2 * ((n_vocab + 1) // 2) + 4
    scored = n_ctx - 1 - n_ctx // 2
    rows = np.memmap(path, dtype="<u2", mode="r", offset=20 + 4 * n_chunk * n_ctx,
                     shape=(n_chunk, scored, nv))
    return n_ctx, n_vocab, n_chunk, tokens, rows


def score_row(logits, row, target, n_vocab):
    """llama-perplexity's KL of one position: (kld, nll, nll_base, same_top)."""
    scale, min_log_prob = row[:4].copy().view("<f4")
    codes = row[4:4 + n_vocab]
    x = logits.astype(np.float32)
    imax = int(np.argmax(x))
    max_logit = x[imax]
    log_sum_exp = np.float32(np.log(np.exp(x - max_logit, dtype=np.float32).sum(dtype=np.float64)))
    nll = float(max_logit + log_sum_exp - x[target])
    p_log_base = np.float32(scale) * codes.astype(np.float32) + np.float32(min_log_prob)
    nll_base = -float(p_log_base[target])
    keep = p_log_base > -16.0
    lb = p_log_base[keep].astype(np.float64)
    kld = float((np.exp(lb) * (lb - x[keep] + float(max_logit + log_sum_exp))).sum())
    return kld, nll, nll_base, imax == int(np.argmax(p_log_base))


def summary(klds, nlls, nll_bases, same):
    klds = np.asarray(klds)
    return {
        "kld_mean": float(klds.mean()),
        "kld_p99": float(np.percentile(klds, 99.0)),
        "top1_agreement": float(np.mean(same)),
        "ppl": float(np.exp(np.mean(nlls))),
        "ppl_base": float(np.exp(np.mean(nll_bases))),
        "tokens": int(klds.size),
    }


def llama_side(gguf, saved, threads, flash_attn):
    import llama_cpp as L

    n_ctx, n_vocab, n_chunk, tokens, rows = read_saved(saved)
    L.llama_backend_init()
    model = L.llama_model_load_from_file(gguf.encode(), L.llama_model_default_params())
    if not model:
        sys.exit(f"error: llama.cpp could not load {gguf}")
    vocab = L.llama_model_get_vocab(model)
    if L.llama_vocab_n_tokens(vocab) != n_vocab:
        sys.exit(f"error: {gguf} has {L.llama_vocab_n_tokens(vocab)} tokens, the reference {n_vocab}")
    bos = L.llama_vocab_bos(vocab) if L.llama_vocab_get_add_bos(vocab) else None
    cp = L.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = {"auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                          "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED}[flash_attn]
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("error: llama.cpp could not create a context")
    first = n_ctx // 2
    klds, nlls, nll_bases, same = [], [], [], []
    batch = L.llama_batch_init(n_ctx, 0, 1)
    for c in range(n_chunk):
        window = [int(t) for t in tokens[c * n_ctx:(c + 1) * n_ctx]]
        if bos is not None:
            window[0] = bos
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        batch.n_tokens = n_ctx
        for i, t in enumerate(window):
            batch.token[i] = t
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i >= first else 0
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            sys.exit(f"error: llama_decode returned {rc}")
        for j in range(first, n_ctx - 1):
            logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, j), shape=(n_vocab,))
            k, n, nb, s = score_row(logits, rows[c, j - first], window[j + 1], n_vocab)
            klds.append(k)
            nlls.append(n)
            nll_bases.append(nb)
            same.append(s)
        print(f"  llama.cpp window {c + 1}/{n_chunk}", file=sys.stderr, flush=True)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return summary(klds, nlls, nll_bases, same)


def run_owl(owl, args):
    r = subprocess.run([owl] + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: owl {' '.join(args[:3])}: {r.stderr.strip()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated demo model names")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("-c", "--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--llama-only", metavar="MODEL.gguf,REF", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.llama_only:
        gguf, ref = a.llama_only.split(",")
        print(json.dumps(llama_side(gguf, ref, a.threads, a.flash_attn)))
        return
    owl = os.path.join(a.repo, "target", "release", "owl")
    if not os.access(owl, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "-p", "owl-cli"], cwd=a.repo, check=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            gguf = subprocess.run([os.path.join(a.repo, "scripts", "fetch-demo-models.sh"), name],
                                  capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            ref = os.path.join(tmp, name + ".logprobs")
            common = ["-c", str(a.ctx), "--chunks", str(a.chunks), "-t", str(a.threads)]
            ref_run = json.loads(run_owl(owl, ["perplexity", gguf, a.text, "--f32-activations",
                                               "--save-logprobs", ref, "--json"] + common))
            ours = json.loads(run_owl(owl, ["perplexity", gguf, a.text, "--kl-divergence", ref, "--json"] + common))
            # llama.cpp in its own process, so that its memory is gone before the next model.
            r = subprocess.run([sys.executable, __file__, "--repo", a.repo, "--threads", str(a.threads),
                                "--flash-attn", a.flash_attn, "--llama-only", f"{gguf},{ref}"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"error: llama.cpp side of {name}: {r.stderr.strip()}")
            theirs = json.loads(r.stdout.strip().splitlines()[-1])
            os.remove(ref)
            row = {"model": name, "gguf": os.path.basename(gguf), "tokens": ours["tokens"],
                   "ppl_reference": ref_run["ppl"], "owl": {k: ours[k] for k in
                   ("kld_mean", "kld_p99", "top1_agreement", "ppl", "ppl_base")}, "llama.cpp": theirs}
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"windows of {a.ctx} tokens, {a.chunks} chunks of {a.text}; reference: owl --f32-activations; "
          f"llama.cpp flash attention {a.flash_attn}")
    print(f"{'model':<15} {'tokens':>6} {'KL owl':>9} {'KL llama':>9} {'p99 owl':>8} {'p99 llama':>9} "
          f"{'top1 owl':>8} {'top1 llama':>10} {'PPL ref':>8} {'PPL owl':>8} {'PPL llama':>9}")
    for r in results:
        o, l = r["owl"], r["llama.cpp"]
        print(f"{r['model']:<15} {r['tokens']:>6} {o['kld_mean']:>9.5f} {l['kld_mean']:>9.5f} "
              f"{o['kld_p99']:>8.4f} {l['kld_p99']:>9.4f} {o['top1_agreement']:>8.4f} {l['top1_agreement']:>10.4f} "
              f"{r['ppl_reference']:>8.4f} {o['ppl']:>8.4f} {l['ppl']:>9.4f}")
        if abs(o["ppl_base"] - l["ppl_base"]) > 1e-3 * o["ppl_base"]:
            print(f"warning: the two sides read different reference perplexities: {o['ppl_base']} vs {l['ppl_base']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
