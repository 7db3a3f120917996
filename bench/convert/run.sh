#!/usr/bin/env bash
# owl quantize vs llama-quantize on the demo models, side by side (issue #17's round trip):
#
#   bench/convert/run.sh [--models smollm2,gemma3,qwen2.5-coder] [--types q8_0,q4_k_m]
#                        [--chunks 8] [--ctx 512]
#
# For each demo model and type: owl quantize and llama.cpp's quantizer (llama_model_quantize,
# the function llama-quantize calls, from the llama-cpp-python build bench/compare uses)
# requantize the same file; llama.cpp loads owl's file and generates; owl measures both
# files' KL divergence and perplexity against the source on the GPL-3 text; gguf-py compares
# the two files key by key and tensor by tensor. A markdown table goes to stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
llama_python="$("$repo/bench/compare/setup_venv.sh")"
gguf_python="$(bash "$repo/scripts/gguf_check/setup.sh")"
cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p owl-cli >&2
exec python3 "$here/roundtrip.py" --repo "$repo" --llama-python "$llama_python" \
  --gguf-python "$gguf_python" --owl "${CARGO_TARGET_DIR:-$repo/target}/release/owl" "$@"
