#!/usr/bin/env bash
# Records, once, what llama.cpp's convert_hf_to_gguf.py writes for every fixture model in
# ../shared/fixtures/models (record.py beside this file), into
# crates/owl-convert/tests/data/convert_hf_to_gguf/VARIANT.json, which owl-convert's test
# compares owl convert's output with. Not part of the test suite: it needs torch (the
# venv of scripts/peft_check/setup.sh) and llama.cpp's source, the same llama.cpp that
# bench/compare builds (llama-cpp-python 0.3.36's sdist: llama.cpp@0c1e57098).
#
#   scripts/convert_reference/record.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${OWL_CONVERT_REFERENCE_WORK:-$HOME/.cache/owl/convert-reference}"
sdist="llama_cpp_python-0.3.36.tar.gz"
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/$sdist"
mkdir -p "$work"
[ -f "$work/$sdist" ] || curl -sSL -o "$work/$sdist" "$url"
llama_cpp="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
[ -f "$llama_cpp/convert_hf_to_gguf.py" ] || tar -xzf "$work/$sdist" -C "$work" \
  llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py \
  llama_cpp_python-0.3.36/vendor/llama.cpp/conversion \
  llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py
python="$(bash "$root/scripts/peft_check/setup.sh")"
out="$root/crates/owl-convert/tests/data/convert_hf_to_gguf"
mkdir -p "$out"
fixtures="$root/../shared/fixtures/models"
for fixture in "$fixtures"/*/; do
  variant="$(basename "$fixture")"
  # A copy under the same name, with a stand-in tokenizer.json listing vocab_size tokens:
  # Gemma 3's converter reads the vocabulary's length from it to drop embedding rows past
  # it (none here), even with set_vocab switched off.
  dir="$work/models/$variant"
  rm -rf "$dir" && mkdir -p "$dir" && cp "$fixture"/config.json "$fixture"/model.safetensors "$dir"/
  "$python" -c 'import json, sys
n = json.load(open(sys.argv[1]))["vocab_size"]
json.dump({"model": {"vocab": {f"t{i}": i for i in range(n)}}, "added_tokens": []}, open(sys.argv[2], "w"))' \
    "$dir/config.json" "$dir/tokenizer.json"
  HF_HUB_OFFLINE=1 "$python" "$root/scripts/convert_reference/record.py" "$llama_cpp" "$dir" "$work/$variant.gguf" \
    >"$out/$variant.json" 2>"$work/$variant.log" \
    || { echo "$variant: convert_hf_to_gguf.py failed; see $work/$variant.log" >&2; rm -f "$out/$variant.json"; continue; }
  echo "$variant: $(grep -c '"name"' "$out/$variant.json") tensors" >&2
done
