#!/usr/bin/env python3
"""Records what llama.cpp's convert_hf_to_gguf.py writes for a fixture model: every
metadata key with its value (arrays as their type, length and a digest) and every tensor's
name, shape, type and a digest of its bytes, as JSON on stdout. owl-convert's test compares its own output with it.

    record.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf

The fixtures hold weights and configs, no tokenizer; set_vocab is switched off for every
model class (owl's side converts with --no-tokenizer), so this records the weights,
hyper-parameters and general.* metadata. Tokenizer metadata is checked elsewhere
(owl-convert's vocab tests). The conversion is --outtype f32.
"""
import hashlib
import json
import sys
from pathlib import Path


def main() -> None:
    llama_cpp, model_dir, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    sys.path.insert(0, str(llama_cpp))
    import convert_hf_to_gguf as conv  # noqa: E402
    import gguf  # noqa: E402

    # Every model class the converter picks gets a set_vocab that does nothing.
    original = conv.get_model_class

    def without_vocab(*args, **kwargs):
        model_class = original(*args, **kwargs)
        model_class.set_vocab = lambda self: None
        return model_class

    conv.get_model_class = without_vocab
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "f32", "--outfile", out]
    conv.main()

    reader = gguf.GGUFReader(out)
    keys = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        kind = gguf.GGUFValueType(field.types[0]).name
        if kind == "ARRAY":
            inner = gguf.GGUFValueType(field.types[-1]).name
            items = [field.contents(i) for i in range(len(field.data))]
            digest = hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]
            keys[field.name] = {"type": f"ARRAY[{inner}]", "len": len(items),
                                "value": items if len(items) <= 64 else None, "sha256": digest}
        else:
            keys[field.name] = {"type": kind, "value": field.contents()}
    tensors = [{"name": t.name, "shape": [int(d) for d in t.shape], "type": t.tensor_type.name,
                "sha256": hashlib.sha256(t.data.tobytes()).hexdigest()[:16]}
               for t in reader.tensors]
    json.dump({"keys": keys, "tensors": tensors}, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
