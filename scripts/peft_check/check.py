#!/usr/bin/env python3
"""Logits of a transformers model with a PEFT adapter applied, as PEFT applies it.

    check.py BASE_DIR ADAPTER_DIR IDS

BASE_DIR holds config.json and model.safetensors, ADAPTER_DIR adapter_config.json and
adapter_model.safetensors (as owl writes them), IDS is a JSON list of token ids. Prints
one JSON object: {"peft_version", "logits": [[...] per position]} (float32, no cache, eager
attention). The adapter is loaded with PeftModel.from_pretrained, the path every PEFT user
takes; its base_model_name_or_path is not followed (the base is BASE_DIR).
"""
import json
import sys

import peft
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main() -> None:
    base_dir, adapter_dir, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(model, adapter_dir).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    json.dump({"peft_version": peft.__version__, "logits": logits.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
