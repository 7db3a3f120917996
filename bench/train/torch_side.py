#!/usr/bin/env python3
"""PyTorch + peft's side of bench/train: LoRA training steps on the CPU.

    torch_side.py HF_DIR BATCH SEQ RANK STEPS THREADS

Random token batches [BATCH, SEQ] (labels = inputs, transformers' causal LM loss), LoRA of
RANK (alpha 2·RANK, no dropout) on q,k,v,o,gate,up,down, AdamW lr 1e-4, float32. Prints
one JSON object: tokens/s over the steps after the first (warm-up), and peak RSS.
"""
import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main() -> None:
    hf, batch, seq, rank, steps, threads = sys.argv[1], *map(int, sys.argv[2:7])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    times = []
    for _ in range(steps):
        ids = torch.randint(100, vocab - 100, (batch, seq))
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    measured = times[1:] or times
    tokens_per_s = batch * seq * len(measured) / sum(measured)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"side": "torch+peft", "torch": torch.__version__, "tokens_per_s": tokens_per_s, "peak_rss": peak}))


if __name__ == "__main__":
    main()
