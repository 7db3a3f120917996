#!/usr/bin/env python3
"""Reference data for owl-tokenizer's tests, produced by transformers (an implementation
independent of owl's) from the same GGUF files.

Writes crates/owl-tokenizer/tests/data/:
  expected_<model>.json   ids/decodes for every corpus string (corpus.json) per demo model
  pre_variants.json       the Qwen2.5 vocabulary run with other `tokenizer.ggml.pre` splits
  spm_llama_style.json    the Gemma 3 vocabulary run as a Llama/Phi-3 style SentencePiece
                          tokenizer (score-ranked derived merges, prefix space)
  chat_expected.json      chat prompts rendered by `apply_chat_template`

Run: python3 scripts/tokenizer_reference/make_expected.py   (uses setup.sh's venv)
The demo models are found through scripts/fetch-demo-models.sh (already cached in CI).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DATA = ROOT / "crates/owl-tokenizer/tests/data"
CHAT_DIR = ROOT / "crates/owl-tokenizer/src/chat"

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
sys.path.insert(0, str(HERE))
import gguf_shim  # noqa: E402,F401  (before transformers touches a GGUF)

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Regex, decoders, normalizers, pre_tokenizers  # noqa: E402
from transformers import GemmaTokenizer, Qwen2Tokenizer, TokenizersBackend  # noqa: E402
from transformers.integrations.gguf.gguf_tokenizer_mapping import (  # noqa: E402
    GGUF_PRE_TOKENIZER_SPLITS,
    convert_gguf_tokenizer,
    get_gguf_tokenizer,
)

# The class AutoTokenizer picks for each demo model (see the fixture's reference.json).
MODELS = {
    "smollm2": TokenizersBackend,
    "gemma3": GemmaTokenizer,
    "qwen2.5-coder": Qwen2Tokenizer,
}


def demo_model(name: str) -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/fetch-demo-models.sh"), name], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def load(name: str):
    path = demo_model(name)
    return MODELS[name].from_pretrained(str(path.parent), gguf_file=path.name), path


def write(name: str, obj) -> None:
    path = DATA / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print("wrote", path.relative_to(ROOT))


def versions():
    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def corpus_cases(tok, corpus, original_pre=None):
    """transformers' ids and decodes for every corpus string. With `original_pre` (a
    pre-tokenizer as the model's own tokenizer.json has it, where transformers' GGUF
    conversion uses another), the ids that pre-tokenizer gives are recorded too where they
    differ, under `*_original_pre`."""
    original = None
    if original_pre is not None:
        original = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
        original.pre_tokenizer = original_pre
    cases = []
    for text in corpus:
        ids = tok(text).input_ids
        plain = tok(text, add_special_tokens=False).input_ids
        text_only = tok(text, add_special_tokens=False, split_special_tokens=True).input_ids
        decoded = tok.decode(plain, skip_special_tokens=False)
        extra = {}
        if original is not None:
            original.encode_special_tokens = False
            alt = {"ids": original.encode(text, add_special_tokens=True).ids,
                   "ids_without_special_tokens": original.encode(text, add_special_tokens=False).ids}
            original.encode_special_tokens = True
            alt["ids_special_as_text"] = original.encode(text, add_special_tokens=False).ids
            mine = {"ids": ids, "ids_without_special_tokens": plain, "ids_special_as_text": text_only}
            extra = {f"{k}_original_pre": v for k, v in alt.items() if v != mine[k]}
        cases.append(
            {
                **extra,
                "text": text,
                "ids": ids,
                "ids_without_special_tokens": plain,
                "ids_special_as_text": text_only,
                "decoded": decoded,
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
                "decoded_special_as_text": tok.decode(text_only, skip_special_tokens=False),
                "lossless": decoded == text,
            }
        )
    return cases


# Pre-tokenizers as the models' own tokenizer.json files spell them (for the families
# transformers' GGUF table lacks); the others come from transformers' table itself.
# Non-ASCII characters are escaped: some range ends (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126,
# U+212A) would be changed by Unicode normalization of the source text.
ORIGINAL_PRE_TOKENIZERS = {
    "default": None,  # transformers' GPT-2 default: ByteLevel with its own regex
    "smollm": pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    ),
    "deepseek-llm": pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("[\r\n]"), "isolated"),
            pre_tokenizers.Split(
                Regex("\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+"),
                "isolated",
            ),
            pre_tokenizers.Split(Regex("\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"), "isolated"),
            pre_tokenizers.Split(Regex("\\s+$"), "isolated"),
            pre_tokenizers.Split(Regex("[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"), "isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ),
    "deepseek-v3": pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("\\p{N}{1,3}"), "isolated"),
            pre_tokenizers.Split(Regex("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"), "isolated"),
            pre_tokenizers.Split(
                Regex(
                    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
                ),
                "isolated",
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ),
}
# Families whose tokenizer.json sets `ignore_merges` (llama.cpp sets it for the same ones).
IGNORE_MERGES = {"llama-bpe", "tekken"}
FROM_TRANSFORMERS_TABLE = ["llama-bpe", "qwen2", "tekken", "gpt-4o", "qwen35"]


def pre_variants(corpus, qwen_path):
    arch, tdict, _ = get_gguf_tokenizer(str(qwen_path))
    out = {"versions": versions(), "vocabulary": "qwen2.5-coder demo model", "variants": {}}
    for pre in FROM_TRANSFORMERS_TABLE + list(ORIGINAL_PRE_TOKENIZERS):
        d = dict(tdict, pre_tokenizer_type=pre)
        backend, _ = convert_gguf_tokenizer(arch, d)
        if pre in ORIGINAL_PRE_TOKENIZERS and ORIGINAL_PRE_TOKENIZERS[pre] is not None:
            backend.pre_tokenizer = ORIGINAL_PRE_TOKENIZERS[pre]
        if pre in IGNORE_MERGES:
            backend.model.ignore_merges = True
        source = "transformers GGUF_PRE_TOKENIZER_SPLITS" if pre in GGUF_PRE_TOKENIZER_SPLITS else "tokenizer.json"
        out["variants"][pre] = {
            "pre_tokenizer_source": source,
            "regex": GGUF_PRE_TOKENIZER_SPLITS.get(pre),
            "ignore_merges": pre in IGNORE_MERGES,
            "ids": [backend.encode(t, add_special_tokens=False).ids for t in corpus],
        }
        print("  pre", pre)
    return out


def spm_llama_style(corpus, gemma_path):
    """Gemma's vocabulary through transformers' Phi-3 builder: merges derived from the scores
    (generate_merges), `Prepend("▁")` + `Replace(" ", "▁")`, byte fallback, Strip decoder."""
    _, tdict, _ = get_gguf_tokenizer(str(gemma_path))
    d = dict(tdict, add_prefix_space=True)
    backend, _ = convert_gguf_tokenizer("phi3", d)
    # the bos the Phi-3 style adds is owl's business; compare the text part only
    cases = []
    for t in corpus:
        ids = backend.encode(t, add_special_tokens=False).ids
        cases.append({"text": t, "ids": ids, "decoded": backend.decode(ids, skip_special_tokens=False)})
    return {"versions": versions(), "vocabulary": "gemma3 demo model as architecture phi3, add_space_prefix true", "cases": cases}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in <city> — it's \"live\" & free",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {"name": "search", "description": "Search the web (日本語 ok)", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}

SCENARIOS = {
    "system_user": {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}], "add_generation_prompt": True},
    "user_only": {"messages": [{"role": "user", "content": "Hello!"}], "add_generation_prompt": True},
    "multi_turn": {
        "messages": [
            {"role": "user", "content": "Hi, who are you?"},
            {"role": "assistant", "content": "An assistant."},
            {"role": "user", "content": "Tell me a joke about tokenizers."},
        ],
        "add_generation_prompt": True,
    },
    "multi_turn_no_generation_prompt": {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "  Spaces around \n\n"},
            {"role": "assistant", "content": "Noted.\n"},
        ],
        "add_generation_prompt": False,
    },
    "tools": {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER_TOOL, SEARCH_TOOL], "add_generation_prompt": True},
    "tool_round_trip": {
        "messages": [
            {"role": "system", "content": "Use tools when needed."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp_c\": 21.5, \"sky\": \"clear\"}"},
        ],
        "tools": [WEATHER_TOOL],
        "add_generation_prompt": True,
    },
}


def chat_expected(tokenizers_by_model):
    gemma_src = (CHAT_DIR / "gemma.jinja").read_text(encoding="utf-8")
    chatml_src = (CHAT_DIR / "chatml.jinja").read_text(encoding="utf-8")
    plan = [
        ("smollm2", tokenizers_by_model["smollm2"], None, "model"),
        ("qwen2.5-coder", tokenizers_by_model["qwen2.5-coder"], None, "model"),
        ("gemma3", tokenizers_by_model["gemma3"], gemma_src, "builtin gemma.jinja"),
        ("chatml_fallback", tokenizers_by_model["smollm2"], chatml_src, "builtin chatml.jinja"),
    ]
    out = {"versions": versions(), "templates": {}}
    for key, tok, src, origin in plan:
        results = {}
        for name, sc in SCENARIOS.items():
            try:
                rendered = tok.apply_chat_template(
                    sc["messages"],
                    tools=sc.get("tools"),
                    add_generation_prompt=sc["add_generation_prompt"],
                    tokenize=False,
                    chat_template=src,
                )
                results[name] = {"rendered": rendered, "ids": tok(rendered, add_special_tokens=False).input_ids}
            except Exception as e:  # the template itself refuses (raise_exception, type errors)
                results[name] = {"error": f"{type(e).__name__}: {e}"}
        out["templates"][key] = {"origin": origin, "bos_token": tok.bos_token, "eos_token": tok.eos_token, "results": results}
        print("  chat", key)
    out["scenarios"] = SCENARIOS
    return out


def main():
    corpus = json.loads((DATA / "corpus.json").read_text(encoding="utf-8"))["corpus"]
    toks = {}
    paths = {}
    for name in MODELS:
        tok, path = load(name)
        toks[name], paths[name] = tok, path
        # SmolLM2's own tokenizer.json splits digits (any \p{N}) before the byte-level
        # regex, as llama.cpp's `smollm` pre-tokenizer does; transformers' GGUF conversion
        # has no entry for `smollm` and uses GPT-2's regex alone.
        original_pre = ORIGINAL_PRE_TOKENIZERS["smollm"] if name == "smollm2" else None
        write(
            f"expected_{name}.json",
            {
                "model": path.name,
                "tokenizer_class": type(tok).__name__,
                "versions": versions(),
                "original_pre_tokenizer": "Digits(individual_digits) + ByteLevel" if original_pre else None,
                "cases": corpus_cases(tok, corpus, original_pre),
            },
        )
    write("pre_variants.json", pre_variants(corpus, paths["qwen2.5-coder"]))
    write("spm_llama_style.json", spm_llama_style(corpus, paths["gemma3"]))
    write("chat_expected.json", chat_expected(toks))


if __name__ == "__main__":
    main()
