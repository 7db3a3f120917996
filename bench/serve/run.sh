#!/usr/bin/env bash
# owl serve against llama.cpp's llama-server under the same load, one command from a clean
# checkout:
#
#   bench/serve/run.sh [--model smollm2|FILE.gguf] [--clients 1,8,32] [--reps 2]
#                      [--requests 2] [--max-tokens 64] [--threads 2] [--parallel 8] [--json OUT]
#
# 1. builds (once, cached) llama-server from the llama.cpp source bench/compare uses
#    (bench/serve/build_llama_server.sh; 10-20 minutes the first time);
# 2. builds owl (cargo build --release -p owl-cli);
# 3. fetches the demo model if needed, starts both servers with the same model, threads and
#    slots, and runs bench/serve/serve_bench.py (see its --help) with the API-client venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
model="smollm2"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    -h|--help) python3 -c "import ast,sys; print(ast.get_docstring(ast.parse(open(sys.argv[1]).read())))" "$here/serve_bench.py"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
llama_server="$("$here/build_llama_server.sh")"
python="$(bash "$repo/scripts/api_clients/setup.sh")"
(cd "$repo" && cargo build --release -q -p owl-cli)
if [ -f "$model" ]; then
  path="$model"; name="$(basename "$model" .gguf)"
else
  path="$("$repo/scripts/fetch-demo-models.sh" "$model" | tail -n 1)"; name="$model"
fi
exec "$python" "$here/serve_bench.py" --owl "$repo/target/release/owl" --llama-server "$llama_server" \
  --model "$path" --name "$name" "${args[@]}"
