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
STAMP="$VENV/.owl-pins"
WANT="$(printf '%s\n' "${PINS[@]}")"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
# A half-made venv from an interrupted run is replaced, not patched.
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" >&2
printf '%s' "$WANT" > "$STAMP"
echo "$VENV/bin/python"
