"""Greedy agreement with the float32 reference: owl and llama.cpp on the same prompts.

For every prompt in ../shared/fixtures/real_models (transformers' float32 forward pass over
the demo GGUFs' dequantized weights), runs greedy decoding for as many tokens as the
reference has and counts how many leading tokens agree, for:

  owl            owl generate (activations quantized to 8 bits, like llama.cpp)
  owl f32-act    owl generate --f32-activations (float32 activations)
  llama.cpp      llama-cpp-python, flash attention off and on

and prints the first reference step whose top1-top2 margin is under 0.2 nats (where
greedy paths may legitimately part). Run it through greedy.sh (which provides the venv).
"""

import argparse
import json
import os
import subprocess
import sys

MODELS = [
    ("smollm2", "smollm2-135m-instruct-q4_1"),
    ("gemma3", "gemma3-270m-q4_k_m"),
    ("qwen2.5-coder", "qwen2.5-coder-0.5b-instruct"),
]
NEAR_TIE = 0.2


def agreed(ours, want):
    n = 0
    for a, b in zip(ours, want):
        if a != b:
            break
        n += 1
    return n


def owl_greedy(owl, model, prompt, n, extra):
    cmd = [owl, "generate", model, prompt, "-n", str(n), "--temperature", "0", "--json", "-t", "2"] + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:3])}: {r.stderr.strip()}")
    return json.loads(r.stdout)["ids"]


def llama_greedy(llm, ids, n):
    out = []
    for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(tok)
        if len(out) == n:
            break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--fixtures", help="real_models folder (default: ../shared/fixtures/real_models)")
    args = ap.parse_args()
    fixtures = args.fixtures or os.path.join(args.repo, "..", "shared", "fixtures", "real_models")
    owl = os.path.join(args.repo, "target", "release", "owl")
    if not os.access(owl, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "-p", "owl-cli"], cwd=args.repo, check=True)
    import llama_cpp  # from the bench venv

    print(f"{'prompt':<34} {'first <0.2 tie':>14} {'owl':>5} {'owl f32-act':>11} {'llama.cpp':>9} {'llama.cpp FA':>12}")
    for name, fixture in MODELS:
        path = subprocess.run([os.path.join(args.repo, "scripts", "fetch-demo-models.sh"), name],
                              capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        ref = json.load(open(os.path.join(fixtures, fixture, "reference.json")))
        llms = [llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, flash_attn=fa)
                for fa in (False, True)]
        for p in ref["prompts"]:
            want = p["greedy"]["ids"]
            margins = [s["top1_minus_top2_logit"] for s in p["greedy"]["steps"]]
            tie = next((i for i, m in enumerate(margins) if m < NEAR_TIE), None)
            row = [agreed(owl_greedy(owl, name, p["prompt"], len(want), []), want),
                   agreed(owl_greedy(owl, name, p["prompt"], len(want), ["--f32-activations"]), want)]
            row += [agreed(llama_greedy(llm, p["input_ids"], len(want)), want) for llm in llms]
            n = len(want)
            print(f"{fixture + '/' + p['key']:<34} {str(tie):>14} " + " ".join(
                f"{f'{a}/{n}':>{w}}" for a, w in zip(row, (5, 11, 9, 12))), flush=True)
        del llms


if __name__ == "__main__":
    main()
