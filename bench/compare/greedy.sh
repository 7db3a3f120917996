#!/usr/bin/env bash
# Greedy agreement of owl (both activation precisions) and llama.cpp with the float32
# reference on the real_models prompts: bench/compare/greedy.sh  (see greedy.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="$("$here/setup_venv.sh")"
exec "$python" "$here/greedy.py" --repo "$repo" "$@"
