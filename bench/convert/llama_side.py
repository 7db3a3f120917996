"""llama.cpp's side of bench/convert (runs in bench/compare's venv):

    llama_side.py quantize SRC OUT FTYPE   llama_model_quantize with allow_requantize, as
                                           `llama-quantize --allow-requantize SRC OUT TYPE`
    llama_side.py generate MODEL PROMPT N  greedy N tokens; prints {"ids": [...], "text": ...}
"""

import ctypes
import json
import sys

import llama_cpp as L


@L.llama_log_callback
def _quiet(level, text, user_data):
    if level == 3 and text:  # GGML_LOG_LEVEL_ERROR
        sys.stderr.write(text.decode("utf-8", "replace"))


def quantize(src, out, ftype):
    L.llama_log_set(_quiet, None)
    p = L.llama_model_quantize_default_params()
    p.ftype = int(ftype)
    p.allow_requantize = True
    p.nthread = 2
    rc = L.llama_model_quantize(src.encode(), out.encode(), p)
    if rc != 0:
        sys.exit(f"llama_model_quantize returned {rc}")
    print(json.dumps({"ok": True}))


def generate(path, prompt, n):
    L.llama_log_set(_quiet, None)
    L.llama_backend_init()
    model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
    if not model:
        sys.exit(f"llama.cpp could not load {path}")
    vocab = L.llama_model_get_vocab(model)
    cp = L.llama_context_default_params()
    cp.n_ctx = 256
    cp.n_threads = cp.n_threads_batch = 2
    ctx = L.llama_init_from_model(model, cp)
    text = prompt.encode()
    buf = (L.llama_token * 512)()
    n_tok = L.llama_tokenize(vocab, text, len(text), buf, 512, True, False)
    ids = list(buf[:n_tok])
    out = []
    batch = ids
    for _ in range(int(n)):
        arr = (L.llama_token * len(batch))(*batch)
        if L.llama_decode(ctx, L.llama_batch_get_one(arr, len(batch))) != 0:
            sys.exit("llama_decode failed")
        logits = L.llama_get_logits_ith(ctx, -1)
        n_vocab = L.llama_vocab_n_tokens(vocab)
        best = max(range(n_vocab), key=lambda i: logits[i])
        if L.llama_vocab_is_eog(vocab, best):
            break
        out.append(best)
        batch = [best]
    pieces = b""
    ctypes_buf = (ctypes.c_char * 256)()
    for t in out:
        k = L.llama_token_to_piece(vocab, t, ctypes_buf, 256, 0, False)
        pieces += bytes(ctypes_buf[:k])
    print(json.dumps({"ids": out, "text": pieces.decode("utf-8", "replace")}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "quantize":
        quantize(*sys.argv[2:5])
    elif cmd == "generate":
        generate(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
