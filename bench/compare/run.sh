#!/usr/bin/env bash
# owl vs llama.cpp side by side, one command from a clean checkout:
#
#   bench/compare/run.sh [--models smollm2,gemma3,qwen2.5-coder] [--threads 1,2] [--reps 5]
#                        [--json OUT] [--no-owl] [--help for the rest]
#
# 1. builds (once, cached) a Python venv with llama-cpp-python compiled from source with
#    -DGGML_NATIVE=ON (bench/compare/setup_venv.sh; 10-20 minutes the first time);
# 2. builds owl (cargo build --release -p owl-cli) if target/release/owl is missing;
# 3. fetches the demo models if needed, runs both tools interleaved and prints one table
#    per model x thread count: owl, llama.cpp, owl / llama.cpp.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
for arg in "$@"; do
  case "$arg" in -h|--help) exec python3 "$here/compare.py" --repo "$repo" --help ;; esac
done
python="$("$here/setup_venv.sh")"
exec "$python" "$here/compare.py" --repo "$repo" "$@"
