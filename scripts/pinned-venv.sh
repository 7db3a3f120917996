# Sourced by the setup scripts of the test suite's Python environments.
#
#   pinned_venv VENV PIN...
#
# Makes (idempotently) a venv at VENV holding exactly the pinned packages, and prints its
# python path. The pins are stamped into the venv: the same pins again cost nothing; other
# pins, or a venv left half-made by an interrupted run, are replaced, not patched.
pinned_venv() {
  local venv="$1"
  shift
  local stamp="$venv/.owl-pins" want
  want="$(printf '%s\n' "$@")"
  # Tests running at once may ask for the same venv: one builds it, the others wait for it.
  mkdir -p "$(dirname "$venv")"
  exec {lock_fd}>"$venv.lock"
  flock "$lock_fd"
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv/bin/python"
    return 0
  fi
  mkdir -p "$(dirname "$venv")"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
  printf '%s' "$want" >"$stamp"
  echo "$venv/bin/python"
}
