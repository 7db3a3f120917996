"""A llama- or qwen2-architecture GGUF dequantized into a Hugging Face directory
(config.json + model.safetensors in F32), with gguf-py's dequantizers (runs in the venv of
setup.sh). The inverse of what convert_hf_to_gguf.py does for these architectures: names
through gguf.TensorNameMap backwards, llama's q/k rows un-permuted (its `permute`), and
config.json from the GGUF hyper-parameters. For the round-trip and peak-memory checks of
`owl convert`; tensors are written one at a time, so memory stays near one tensor.

    python export_hf.py MODEL.gguf OUT_DIR
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

HF_PREFIXES = ("model.layers.", "model.embed_tokens", "model.norm", "lm_head")


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types[0] == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    return f.parts[f.data[0]].tolist()[0]


def hf_name_of(tmap, blocks):
    """GGUF base name -> the Llama-style HF name gguf's map has for it."""
    inverse = {}
    for hf, (_, gg) in tmap.mapping.items():
        if hf.startswith(HF_PREFIXES) and gg not in inverse:
            inverse[gg] = hf
    return inverse


def unpermute(w, n_head):
    # llama.cpp's permute: reshape(n_head, 2, r/n_head/2, c).swapaxes(1, 2); undone here.
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    reader = GGUFReader(src)
    arch = field(reader, "general.architecture")
    if arch not in ("llama", "qwen2"):
        sys.exit(f"{src}: architecture {arch} is not supported by this exporter (llama, qwen2)")
    k = lambda name: field(reader, f"{arch}.{name}")  # noqa: E731
    blocks, n_head, n_kv = k("block_count"), k("attention.head_count"), k("attention.head_count_kv")
    model_arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    inverse = hf_name_of(gguf.TensorNameMap(model_arch, blocks), blocks)
    tensors = {t.name: t for t in reader.tensors}
    vocab = int(tensors["token_embd.weight"].shape[1])
    config = {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "hidden_size": k("embedding_length"),
        "intermediate_size": k("feed_forward_length"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "num_hidden_layers": blocks,
        "rms_norm_eps": k("attention.layer_norm_rms_epsilon"),
        "rope_theta": k("rope.freq_base") or 10000.0,
        "max_position_embeddings": k("context_length"),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensors,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))

    plan, offset = [], 0
    for t in reader.tensors:
        base, suffix = t.name.rsplit(".", 1)
        hf = inverse.get(base)
        if hf is None:
            sys.exit(f"{t.name}: no Hugging Face name in gguf's map")
        shape = [int(d) for d in reversed(t.shape)]
        n = 4 * int(np.prod(shape))
        plan.append((t, f"{hf}.{suffix}", shape, offset, offset + n))
        offset += n
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": [a, b]} for _, name, shape, a, b in plan}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = out / "model.safetensors.part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t, name, shape, _, _ in plan:
            w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
            if arch == "llama" and name.endswith("q_proj.weight"):
                w = unpermute(w, n_head)
            elif arch == "llama" and name.endswith("k_proj.weight"):
                w = unpermute(w, n_kv)
            f.write(np.ascontiguousarray(w).tobytes())
    tmp.rename(out / "model.safetensors")
    print(json.dumps({"tensors": len(plan), "bytes": offset, "largest": max(b - a for *_, a, b in plan)}))


if __name__ == "__main__":
    main()
