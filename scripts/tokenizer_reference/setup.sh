#!/usr/bin/env bash
# Creates (idempotently) the Python environment that produces owl-tokenizer's reference data:
# transformers' GGUF-derived tokenizers and apply_chat_template. Tests never need it; only
# make_expected.py does. Prints the venv's python path on success.
#
#   OWL_TOKREF_VENV  where the venv lives (default ~/.cache/owl/venv-tokref)
set -euo pipefail

VENV="${OWL_TOKREF_VENV:-$HOME/.cache/owl/venv-tokref}"
# Pinned to the versions that produced ../shared/fixtures/real_models (transformers 5.24.0,
# gguf 0.19.0, numpy 2.4.6). torch is not needed for tokenizers or chat templates.
PINS=(
  "transformers==5.24.0"
  "tokenizers==0.23.2"
  "gguf==0.19.0"
  "jinja2==3.1.6"
  "sentencepiece==0.2.3"
  "protobuf==7.36.2"
  "numpy==2.4.6"
)
source "$(dirname "$0")/../pinned-venv.sh"
pinned_venv "$VENV" "${PINS[@]}"
