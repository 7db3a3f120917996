"""Two GGUF files side by side with gguf-py (runs in scripts/gguf_check's venv):

    compare_files.py A.gguf B.gguf

Prints {"keys_only_a", "keys_only_b", "values_differ", "tensors": n, "same_type": n,
"same_bytes": n, "type_differs": [[name, type_a, type_b], ...]}.
"""

import json
import sys

from gguf import GGUFReader, GGUFValueType


def values(reader):
    out = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if f.types and f.types[0] == GGUFValueType.ARRAY:
            out[name] = ("array", len(f.data))
        elif f.types and f.types[0] == GGUFValueType.STRING:
            out[name] = bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
        else:
            out[name] = f.parts[f.data[0]].tolist()
    return out


a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
va, vb = values(a), values(b)
tb = {t.name: t for t in b.tensors}
same_type = same_bytes = 0
type_differs = []
for t in a.tensors:
    u = tb.get(t.name)
    if u is None:
        type_differs.append([t.name, t.tensor_type.name, None])
        continue
    if t.tensor_type == u.tensor_type:
        same_type += 1
        if t.data.tobytes() == u.data.tobytes():
            same_bytes += 1
    else:
        type_differs.append([t.name, t.tensor_type.name, u.tensor_type.name])
print(json.dumps({
    "keys_only_a": sorted(set(va) - set(vb)),
    "keys_only_b": sorted(set(vb) - set(va)),
    "values_differ": sorted(k for k in set(va) & set(vb) if va[k] != vb[k]),
    "tensors": len(a.tensors),
    "same_type": same_type,
    "same_bytes": same_bytes,
    "type_differs": type_differs[:20],
}))
