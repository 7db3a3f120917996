#!/usr/bin/env bash
# Creates (idempotently) the Python environment in which llama.cpp's own GGUF library,
# `gguf` from PyPI (gguf-py, published from llama.cpp's tree), reads the files owl writes
# (check.py beside this file). Prints the venv's python path on success; any failure fails
# the test that asked for it.
#
#   OWL_GGUF_VENV  where the venv lives (default ~/.cache/owl/venv-gguf)
set -euo pipefail

VENV="${OWL_GGUF_VENV:-$HOME/.cache/owl/venv-gguf}"
PINS=(
  "gguf==0.19.0"
  "numpy==2.4.6"
)
source "$(dirname "$0")/../pinned-venv.sh"
pinned_venv "$VENV" "${PINS[@]}"
