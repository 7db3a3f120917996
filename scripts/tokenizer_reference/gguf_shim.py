"""Lets transformers build tokenizers from GGUF files without PyTorch.

transformers 5 reads GGUF metadata in `transformers.integrations.gguf.reader`, a module that
imports torch at the top for its tensor code. Tokenizers and chat templates need none of
that, so this installs a stand-in `read_gguf_metadata` (the only function the tokenizer path
calls) that reads the same dictionary with gguf-py. Import this module before transformers
touches a GGUF file.
"""

import sys
import types

from gguf import GGUFReader, GGUFValueType


def read_gguf_metadata(gguf_path, string_arrays=()):
    """Same contract as transformers' reader: scalars as Python values, numeric arrays as
    lists, string arrays in full only for the keys in `string_arrays` (else their length)."""
    reader = GGUFReader(gguf_path)
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            element = field.types[1] if len(field.types) > 1 else None
            if element == GGUFValueType.STRING:
                if key in string_arrays:
                    metadata[key] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
                else:
                    metadata[key] = len(field.data)
            else:
                metadata[key] = [field.parts[i].tolist()[0] for i in field.data]
        elif kind == GGUFValueType.STRING:
            metadata[key] = bytes(field.parts[-1]).decode("utf-8")
        else:
            metadata[key] = field.parts[-1].tolist()[0]
    return metadata, tuple(t.name for t in reader.tensors)


def install():
    name = "transformers.integrations.gguf.reader"
    module = types.ModuleType(name)
    module.read_gguf_metadata = read_gguf_metadata
    sys.modules[name] = module


install()
