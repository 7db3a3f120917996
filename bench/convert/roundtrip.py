"""bench/convert driver (see run.sh): owl quantize vs llama.cpp's quantizer, side by side.

For each demo model and type, both tools requantize the same source file. Reported:
- how the two files compare (gguf-py): tensors of the same type, tensors byte-identical,
  metadata keys present in one only;
- llama.cpp loading owl's file: its greedy continuation of a prompt, next to the one it
  gives for its own file;
- what each file costs against the source on the GPL-3 text (owl perplexity
  --kl-divergence, same windows for both): mean KL, 99th-percentile KL, top-1 agreement,
  perplexity.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA_FTYPE = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q4_k_s": 14, "q4_k_m": 15,
               "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25}
TEXT = "/usr/share/common-licenses/GPL-3"
PROMPT = "The capital of France is"


def run_json(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:  # one JSON event a line: the last is the result
        return json.loads(r.stdout.strip().splitlines()[-1])


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--llama-python", required=True)
    ap.add_argument("--gguf-python", required=True)
    ap.add_argument("--owl", required=True)
    ap.add_argument("--models", default="smollm2,gemma3,qwen2.5-coder")
    ap.add_argument("--types", default="q8_0,q4_k_m")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            pulled = subprocess.run([a.owl, "pull", model, "--json"], capture_output=True, text=True, check=True)
            src = [json.loads(l) for l in pulled.stdout.splitlines() if l.strip()][-1]["path"]
            for t in a.types.split(","):
                ours = os.path.join(tmp, f"{model}.owl.{t}.gguf")
                theirs = os.path.join(tmp, f"{model}.llama.{t}.gguf")
                subprocess.run([a.owl, "quantize", src, ours, t, "--allow-requantize", "--json"],
                               capture_output=True, check=True)
                run_json([a.llama_python, os.path.join(HERE, "llama_side.py"), "quantize", src, theirs,
                          str(LLAMA_FTYPE[t])])
                cmp = run_json([a.gguf_python, os.path.join(HERE, "compare_files.py"), ours, theirs])
                cmp["same_file"] = sha256(ours) == sha256(theirs)
                gen_ours = run_json([a.llama_python, os.path.join(HERE, "llama_side.py"), "generate", ours,
                                     PROMPT, "16"])
                gen_theirs = run_json([a.llama_python, os.path.join(HERE, "llama_side.py"), "generate", theirs,
                                       PROMPT, "16"])
                kl = {}
                for side, path in (("owl", ours), ("llama", theirs)):
                    kl[side] = run_json([a.owl, "perplexity", path, TEXT, "-c", str(a.ctx), "--chunks",
                                         str(a.chunks), "--kl-divergence", src, "--json"])
                rows.append({"model": model, "type": t, "cmp": cmp, "gen_ours": gen_ours,
                             "gen_theirs": gen_theirs, "kl": kl})
                print(f"{model} {t}: {cmp['same_bytes']}/{cmp['tensors']} tensors byte-identical, "
                      f"KL owl {kl['owl']['kld_mean']:.5f} llama {kl['llama']['kld_mean']:.5f}", file=sys.stderr)
    print(f"owl quantize vs llama.cpp's llama_model_quantize (llama-cpp-python 0.3.36 = llama.cpp "
          f"0c1e570), --allow-requantize from the demo file; KL over {a.chunks} windows of {a.ctx} "
          f"tokens of GPL-3, measured by owl for both files.\n")
    print("| model | type | tensors same type | byte-identical tensors | whole file identical | keys only in owl / llama | "
          "llama.cpp greedy on owl's file = on its own | KL owl | KL llama | p99 KL owl / llama | "
          "top-1 owl / llama | PPL owl / llama |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c, ko, kll = r["cmp"], r["kl"]["owl"], r["kl"]["llama"]
        same_gen = "yes" if r["gen_ours"]["ids"] == r["gen_theirs"]["ids"] else (
            f"no: {r['gen_ours']['text']!r} vs {r['gen_theirs']['text']!r}")
        print(f"| {r['model']} | {r['type']} | {c['same_type']}/{c['tensors']} | {c['same_bytes']}/{c['tensors']} | "
              f"{'yes' if c['same_file'] else 'no'} | "
              f"{len(c['keys_only_a'])} / {len(c['keys_only_b'])} | {same_gen} | {ko['kld_mean']:.5f} | "
              f"{kll['kld_mean']:.5f} | {ko['kld_p99']:.4f} / {kll['kld_p99']:.4f} | "
              f"{ko['top1_agreement']:.4f} / {kll['top1_agreement']:.4f} | {ko['ppl']:.4f} / {kll['ppl']:.4f} |")
        if c["type_differs"] or c["keys_only_a"] or c["keys_only_b"] or c["values_differ"]:
            print(f"|  | details: types differ {c['type_differs'][:5]}; keys only owl {c['keys_only_a']}; "
                  f"only llama {c['keys_only_b']}; values differ {c['values_differ']} |")


if __name__ == "__main__":
    main()
