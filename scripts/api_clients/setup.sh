#!/usr/bin/env bash
# Creates (idempotently) the Python environment with the official API clients that the
# server's tests drive `owl serve` with: openai, anthropic, ollama from PyPI, and jsonschema
# to validate structured output. Prints the venv's python path on success; any failure fails the test that asked for it.
#
#   OWL_API_CLIENTS_VENV  where the venv lives (default ~/.cache/owl/venv-api-clients)
set -euo pipefail

VENV="${OWL_API_CLIENTS_VENV:-$HOME/.cache/owl/venv-api-clients}"
PINS=(
  "openai==3.63.0"
  "anthropic==2.17.0"
  "ollama==0.6.3"
  "jsonschema==4.26.0"
)
source "$(dirname "$0")/../pinned-venv.sh"
pinned_venv "$VENV" "${PINS[@]}"
