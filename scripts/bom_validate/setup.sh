#!/usr/bin/env bash
# Creates (idempotently) the Python environment that checks owl's AI BOMs against the
# official specifications (validate.py beside this file): cyclonedx-python-lib, the CycloneDX
# project's library, ships the CycloneDX 1.6 JSON schema with the SPDX license-id and JSF
# schemas it references; spdx-python-model, the SPDX project's bindings generated from the
# SPDX 3.0.1 model, reads and re-writes a document with every type, vocabulary and cardinality
# the model sets. No PyPI package ships SPDX's own spdx-json-schema.json (spdx3-validate
# downloads it at run time), so validate.py uses that schema only when OWL_SPDX_SCHEMA names a
# copy. Prints the venv's python path on success; any failure fails the test that asked for it.
#
#   OWL_BOM_VENV  where the venv lives (default ~/.cache/owl/venv-bom)
set -euo pipefail

VENV="${OWL_BOM_VENV:-$HOME/.cache/owl/venv-bom}"
PINS=(
  "cyclonedx-python-lib[json-validation]==11.12.0"
  "jsonschema==4.26.0"
  "spdx-python-model==0.0.6"
)
source "$(dirname "$0")/../pinned-venv.sh"
pinned_venv "$VENV" "${PINS[@]}"
