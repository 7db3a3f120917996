#!/usr/bin/env bash
# Creates (idempotently) the Python environment in which PEFT itself loads the adapters owl
# writes (check.py beside this file): torch, transformers and peft from PyPI. Prints the
# venv's python path on success; any failure fails the test that asked for it.
#
# PyPI has no CPU-only torch for Linux x86-64: its wheel is a CUDA build whose libraries
# name the CUDA runtime libraries as load-time dependencies. So torch and peft/accelerate
# go in with --no-deps, with exactly the NVIDIA library wheels torch links against (no
# triton, cusolver or CUDA toolkit: 2.5 GB of downloads instead of 3.0, a 4.3 GB venv, about
# a minute on this network). Nothing here uses a GPU; torch runs on the CPU.
#
#   OWL_PEFT_VENV  where the venv lives (default ~/.cache/owl/venv-peft)
set -euo pipefail

VENV="${OWL_PEFT_VENV:-$HOME/.cache/owl/venv-peft}"
NO_DEPS=(
  "torch==2.15.0"
  "nvidia-cuda-runtime==13.2.86"
  "nvidia-cublas==13.4.1.3"
  "nvidia-cudnn-cu13==9.26.0.51"
  "nvidia-cuda-nvrtc==13.2.86"
  "nvidia-cuda-cupti==13.2.86"
  "nvidia-cufft==12.2.0.57"
  "nvidia-cusparse==12.7.10.12"
  "nvidia-nvjitlink==13.5.37"
  "nvidia-cusparselt-cu13==0.8.1"
  "nvidia-nccl-cu13==2.30.7"
  "nvidia-nvshmem-cu13==3.7.2"
  "nvidia-cufile==1.17.1.22"
  "peft==0.21.2"
  "accelerate==1.16.0"
)
WITH_DEPS=(
  "filelock==4.3.2"
  "typing-extensions==4.16.0"
  "setuptools>=77.0.3"
  "sympy==1.14.0"
  "networkx==3.6.1"
  "jinja2==3.1.6"
  "fsspec==2026.9.0"
  "numpy==2.4.6"
  "transformers==5.25.0"
  "safetensors==0.8.0"
  "psutil==7.2.2"
)
want="$(printf '%s\n' "${NO_DEPS[@]}" -- "${WITH_DEPS[@]}")"
stamp="$VENV/.owl-pins"
mkdir -p "$(dirname "$VENV")"
# Tests running at once may ask for the venv: one builds it, the others wait for it.
exec {lock_fd}>"$VENV.lock"
flock "$lock_fd"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts)
"${pip[@]}" --no-deps "${NO_DEPS[@]}" >&2
"${pip[@]}" "${WITH_DEPS[@]}" >&2
# The import this venv exists for, before it is declared ready.
"$VENV/bin/python" -c 'import torch, transformers, peft; torch.ones(1)' >&2
printf '%s' "$want" >"$stamp"
echo "$VENV/bin/python"
