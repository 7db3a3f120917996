#!/usr/bin/env bash
# Creates (once) the Python venv that holds llama-cpp-python for bench/compare, building
# llama.cpp from the sdist with -DGGML_NATIVE=ON so it uses every SIMD extension this CPU
# has (the same footing owl's runtime dispatch gets). Idempotent: a marker file records the
# exact pins and CMake arguments it was built with; a matching marker means nothing to do.
#
#   bench/compare/setup_venv.sh            prints the venv's python path on stdout
#
# Env: OWL_BENCH_VENV (default $XDG_CACHE_HOME/owl/bench-venv, else ~/.cache/owl/bench-venv),
#      OWL_BENCH_BUILD_JOBS (parallel compile jobs, default: number of CPUs).
# Progress and pip logs go to stderr / $venv/build.log; the build runs under `nice -n 19`.
set -euo pipefail

# Pins. llama-cpp-python 0.3.36 vendors ggml-org/llama.cpp@0c1e57098 (its CHANGELOG),
# which knows the gemma3, llama and qwen2 architectures of owl's demo models.
LLAMA_CPP_PYTHON_VERSION="0.3.36"
LLAMA_CPP_COMMIT="0c1e57098"
BUILD_TOOLS=("cmake==3.31.10" "ninja==1.13.0" "scikit-build-core==0.11.6")
# CPU-only, native ISA; no multimodal (mtmd) library and no HTTPS support: neither is used
# by the benchmark and both cost compile time.
CMAKE_ARGS_PINNED="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DGGML_BLAS=OFF"
# On a CPU with AMX, llama.cpp@0c1e57098's AMX matmul (ggml_backend_amx_mul_mat) dies with
# SIGSEGV on the first prompt batch (seen on a 2-vCPU Sapphire Rapids VM): there the build
# names every other extension the CPU has instead of -march=native, and AMX off. owl does not
# use AMX either.
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
  has() { grep -qw "$1" /proc/cpuinfo; }
  features=""
  for pair in sse4_2:SSE42 f16c:F16C fma:FMA bmi2:BMI2 avx:AVX avx2:AVX2 avx_vnni:AVX_VNNI \
              avx512bw:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    has "${pair%%:*}" && features="$features -DGGML_${pair##*:}=ON"
  done
  CMAKE_ARGS_PINNED="-DGGML_NATIVE=OFF$features -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DGGML_BLAS=OFF"
fi

venv="${OWL_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/owl/bench-venv}"
marker="$venv/.owl-bench-ready"
want_marker="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION llama.cpp@$LLAMA_CPP_COMMIT ${BUILD_TOOLS[*]} CMAKE_ARGS=$CMAKE_ARGS_PINNED host=$(uname -m)"

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want_marker" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"
  exit 0
fi

python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info >= (3, 8), sys.version' \
  || { echo "error: bench/compare needs Python >= 3.8 ($python)" >&2; exit 1; }

echo "bench/compare: building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION into $venv" >&2
echo "  (compiles llama.cpp from source with $CMAKE_ARGS_PINNED; expect 10-20 minutes on 2 cores)" >&2
rm -f "$marker"
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
log="$venv/build.log"
: >"$log"

pip() { nice -n 19 "$venv/bin/python" -m pip --disable-pip-version-check "$@" >>"$log" 2>&1; }

pip install --upgrade "pip>=23" \
  || { echo "error: pip upgrade failed; see $log" >&2; exit 1; }
pip install "${BUILD_TOOLS[@]}" \
  || { echo "error: installing build tools failed; see $log" >&2; exit 1; }

# --no-build-isolation: build with the pinned cmake/ninja/scikit-build-core installed above.
# --no-binary: never take a prebuilt wheel (those are built without -march=native).
# --no-cache-dir: a wheel cached from another CMAKE_ARGS would otherwise be reused silently.
jobs="${OWL_BENCH_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
PATH="$venv/bin:$PATH" \
CMAKE_ARGS="$CMAKE_ARGS_PINNED" \
CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
  pip install --verbose --no-build-isolation --no-binary llama-cpp-python --no-cache-dir \
    --force-reinstall "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" \
  || { echo "error: building llama-cpp-python failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }

# Smoke check: the library loads and reports the ISA features it was compiled with.
"$venv/bin/python" - >&2 <<'PY' || { echo "error: llama_cpp does not import" >&2; exit 1; }
import llama_cpp
print("llama_cpp", llama_cpp.__version__, "system info:", llama_cpp.llama_print_system_info().decode())
PY

echo "$want_marker" >"$marker"
echo "$venv/bin/python"
