"""Reads a GGUF file with llama.cpp's own library (gguf-py) and prints what it sees as JSON.

    python check.py FILE.gguf [HF_DIR]

- "kv": every metadata key in file order, with its GGUF value type and value (arrays:
  their element type, length and first values);
- "tensors": name, shape (ne0 first, as GGUF stores it), ggml type name, in file order;
- "unknown_tensors": tensor names that llama.cpp's tensor list for the file's architecture
  (gguf.MODEL_TENSORS, formatted for every block) does not have;
- "unknown_keys": metadata keys that are not among gguf.Keys (with {arch} filled in);
- with HF_DIR: "hf_names", each tensor name of the directory's model*.safetensors with the
  GGUF names gguf.TensorNameMap (what convert_hf_to_gguf.py uses) gives it (per-expert
  names as the stacked tensor they join; DeepSeek's kv_b_proj as the k_b and v_b it is
  split into), or null.
"""

import json
import re
import struct
import sys
from pathlib import Path

import gguf
from gguf import GGUFReader, GGUFValueType


def value_of(field):
    types = field.types
    if not types:
        return None
    if types[0] == GGUFValueType.ARRAY:
        sub = types[1] if len(types) > 1 else None
        n = len(field.data)
        if sub == GGUFValueType.STRING:
            items = [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data[:8]]
        else:
            items = [field.parts[i].tolist()[0] for i in field.data[:8]]
        return {"type": "ARRAY", "element": sub.name if sub else None, "len": n, "first": items}
    part = field.parts[field.data[0]]
    if types[0] == GGUFValueType.STRING:
        return {"type": "STRING", "value": bytes(part).decode("utf-8", "replace")}
    return {"type": types[0].name, "value": part.tolist()[0]}


def known_keys(arch):
    keys = set()
    for group in vars(gguf.Keys).values():
        if isinstance(group, type):
            for k, v in vars(group).items():
                if not k.startswith("_") and isinstance(v, str):
                    if "{arch}" in v:
                        try:
                            v = v.format(arch=arch)
                        except (KeyError, IndexError):
                            continue  # a key with other placeholders
                    keys.add(v)
    return keys


def main():
    path = Path(sys.argv[1])
    reader = GGUFReader(path)
    kv = []
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's own header pseudo-fields
        kv.append({"key": name, **(value_of(field) or {})})
    meta = {e["key"]: e for e in kv}
    arch_name = meta.get("general.architecture", {}).get("value")
    tensors = [
        {"name": t.name, "shape": [int(x) for x in t.shape], "type": t.tensor_type.name}
        for t in reader.tensors
    ]
    out = {"kv": kv, "tensors": tensors, "architecture": arch_name}
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    if arch is not None:
        blocks = meta.get(f"{arch_name}.block_count", {}).get("value", 0)
        allowed = set()
        for t in gguf.MODEL_TENSORS[arch]:
            pattern = gguf.TENSOR_NAMES[t]
            for bid in range(max(blocks, 1)):
                allowed.add(pattern.format(bid=bid))
        out["unknown_tensors"] = [
            t["name"] for t in tensors if t["name"].rsplit(".", 1)[0] not in allowed
        ]
        known = known_keys(arch_name)
        out["unknown_keys"] = [e["key"] for e in kv if e["key"] not in known]
        if len(sys.argv) > 2:
            tmap = gguf.TensorNameMap(arch, blocks)
            names = {}
            for st in sorted(Path(sys.argv[2]).glob("model*.safetensors")):
                raw = st.read_bytes()
                (n,) = struct.unpack("<Q", raw[:8])
                header = json.loads(raw[8 : 8 + n])
                for hf in header:
                    if hf != "__metadata__":
                        # convert_hf_to_gguf.py stacks experts under the name without
                        # the expert index before it maps the name.
                        merged = re.sub(r"\.experts\.\d+\.", ".experts.", hf)
                        # DeepSeek's modify_tensors renames the router's correction bias so
                        # that the map's ".bias" suffix applies.
                        merged = merged.replace("e_score_correction_bias", "e_score_correction.bias")
                        # ...and splits kv_b_proj into k_b_proj and v_b_proj (absorbed MLA).
                        if arch_name == "deepseek2" and merged.endswith("kv_b_proj.weight"):
                            parts = [merged.replace("kv_b_proj", p) for p in ("k_b_proj", "v_b_proj")]
                        else:
                            parts = [merged]
                        got = [tmap.get_name(p, try_suffixes=(".weight", ".bias")) for p in parts]
                        names[hf] = None if None in got else got
            out["hf_names"] = names
    else:
        out["unknown_architecture"] = True
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
