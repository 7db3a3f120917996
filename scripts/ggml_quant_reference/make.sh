#!/usr/bin/env bash
# Builds weighted_reference against llama.cpp's ggml-quants.c and writes the expectations
# for owl-kernels' weighted-quantization tests. See README.md.
#
# usage: scripts/ggml_quant_reference/make.sh [LLAMA_CPP_DIR] [OUT.bin [ROWS SEED]]
#   LLAMA_CPP_DIR defaults to /tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp;
#   OUT.bin to the committed test data; ROWS/SEED (default 8, 0x2545F491) for wider runs.
#   EXTRA_CFLAGS is appended to the compiler flags (e.g. "-march=native -ffp-contract=fast"
#   to see what a FMA build of ggml changes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lcp="${1:-/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp}"
out="${2:-$root/crates/owl-kernels/tests/data/weighted_quant/ggml_weighted.bin}"
ggml="$lcp/ggml"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT

# -ffp-contract=off and no -march: plain IEEE f32 arithmetic in source order, no fused
# multiply-adds (Rust does not contract either, so results must be byte-identical).
CFLAGS=(-O2 -std=c11 -ffp-contract=off -fno-fast-math -DNDEBUG -D_GNU_SOURCE
        -I"$ggml/include" -I"$ggml/src" -I"$ggml/src/ggml-cpu" ${EXTRA_CFLAGS:-})
gcc "${CFLAGS[@]}" -c "$ggml/src/ggml-quants.c" -o "$build/ggml-quants.o"
gcc "${CFLAGS[@]}" -c "$here/weighted_reference.c" -o "$build/weighted_reference.o"
gcc "$build/ggml-quants.o" "$build/weighted_reference.o" -lm -o "$build/weighted_reference"
mkdir -p "$(dirname "$out")"
"$build/weighted_reference" "$out" "${@:3}"
echo "wrote $out ($(stat -c %s "$out") bytes)"
