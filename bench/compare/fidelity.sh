#!/usr/bin/env bash
# Default-path fidelity: KL divergence of owl's and llama.cpp's default paths from the
# float32 reference (owl --f32-activations), over the same windows (see fidelity.py).
#   bench/compare/fidelity.sh [--models smollm2,gemma3] [-c 512] [--chunks 8] [--json F]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="$("$here/setup_venv.sh")"
exec "$python" "$here/fidelity.py" --repo "$repo" "$@"
