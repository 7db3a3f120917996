#!/usr/bin/env bash
# Sets up (idempotently) what the chat page's browser test needs: Debian's headless
# Chromium and its WebDriver (apt packages `chromium` and `chromium-driver`, installed once),
# and a venv with Selenium, the browser driver library. Prints the venv's python path; any
# failure fails the test that asked for it. Nothing is fetched at test time but these
# packages: Selenium is pointed at the system chromedriver and runs offline.
#
#   OWL_WEBUI_VENV  where the venv lives (default ~/.cache/owl/venv-webui)
set -euo pipefail

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium chromium-driver >&2 \
    || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q chromium chromium-driver >&2; }
fi

VENV="${OWL_WEBUI_VENV:-$HOME/.cache/owl/venv-webui}"
PINS=(
  "selenium==4.50.0"
)
source "$(dirname "$0")/../pinned-venv.sh"
pinned_venv "$VENV" "${PINS[@]}"
