#!/usr/bin/env bash
# Builds (once) llama.cpp's `llama-server` from the same source bench/compare uses: the
# llama.cpp that llama-cpp-python 0.3.36's sdist vendors (ggml-org/llama.cpp@0c1e57098),
# CPU-only with -DGGML_NATIVE=ON, so it runs every SIMD extension this CPU has (the footing
# owl's runtime dispatch gets). Idempotent: a marker records the pins and CMake arguments.
#
#   bench/serve/build_llama_server.sh      prints the llama-server path on stdout
#
# Env: OWL_BENCH_SERVE_DIR (default $XDG_CACHE_HOME/owl/llama-server, else
#      ~/.cache/owl/llama-server), OWL_BENCH_BUILD_JOBS (default: number of CPUs).
# Progress goes to stderr, the build's own output to $dir/build.log; it runs under nice.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
LLAMA_CPP_COMMIT="0c1e57098"
SDIST="llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
BUILD_TOOLS=("cmake==3.31.10" "ninja==1.13.0")
# The server without its web UI (no npm, no download at build time) and without HTTPS.
CMAKE_ARGS_PINNED=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF)

dir="${OWL_BENCH_SERVE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/owl/llama-server}"
marker="$dir/.owl-ready"
want="$SDIST llama.cpp@$LLAMA_CPP_COMMIT ${BUILD_TOOLS[*]} ${CMAKE_ARGS_PINNED[*]} host=$(uname -m)"
server="$dir/build/bin/llama-server"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -x "$server" ]; then
  echo "$server"
  exit 0
fi

echo "bench/serve: building llama-server (llama.cpp@$LLAMA_CPP_COMMIT) into $dir; 10-20 minutes on 2 cores" >&2
rm -f "$marker"
mkdir -p "$dir"
log="$dir/build.log"
: >"$log"
python="${PYTHON:-python3}"
[ -x "$dir/tools/bin/python" ] || "$python" -m venv "$dir/tools"
"$dir/tools/bin/python" -m pip --disable-pip-version-check install -q "${BUILD_TOOLS[@]}" >>"$log" 2>&1 \
  || { echo "error: installing ${BUILD_TOOLS[*]} failed; see $log" >&2; exit 1; }

# The sdist, by its sha256 from PyPI's simple index (PEP 503: the hash is in the link).
if [ ! -f "$dir/$SDIST.ok" ]; then
  "$dir/tools/bin/python" - "$dir" "$SDIST" <<'PY' || { echo "error: downloading $SDIST failed" >&2; exit 1; }
import hashlib, re, sys, urllib.request
out, name = sys.argv[1], sys.argv[2]
index = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/", timeout=60).read().decode()
m = re.search(r'href="([^"#]*/' + re.escape(name) + r')#sha256=([0-9a-f]{64})"', index)
if not m:
    sys.exit(f"{name} is not on PyPI's index")
url, sha = m.group(1), m.group(2)
data = urllib.request.urlopen(url, timeout=600).read()
if hashlib.sha256(data).hexdigest() != sha:
    sys.exit(f"{name}: sha256 mismatch")
tmp = f"{out}/{name}.tmp"
with open(tmp, "wb") as f:
    f.write(data)
import os
os.replace(tmp, f"{out}/{name}")
open(f"{out}/{name}.ok", "w").write(sha + "\n")
PY
fi
rm -rf "$dir/src"
mkdir -p "$dir/src"
tar -xzf "$dir/$SDIST" -C "$dir/src" --strip-components=1
src="$dir/src/vendor/llama.cpp"
jobs="${OWL_BENCH_BUILD_JOBS:-$(nproc)}"
export PATH="$dir/tools/bin:$PATH"
nice -n 19 cmake -S "$src" -B "$dir/build" -G Ninja "${CMAKE_ARGS_PINNED[@]}" >>"$log" 2>&1 \
  || { echo "error: configuring llama.cpp failed; see $log" >&2; exit 1; }
nice -n 19 cmake --build "$dir/build" --target llama-server -j "$jobs" >>"$log" 2>&1 \
  || { echo "error: building llama-server failed; see $log" >&2; exit 1; }
"$server" --version >>"$log" 2>&1 || { echo "error: $server does not run; see $log" >&2; exit 1; }
echo "$want" >"$marker"
echo "$server"
