#!/usr/bin/env bash
# Runs every ```sh block of README.md, in order, from the repository root, as a user who
# follows the page would: the set-up blocks build owl and install it (into a temporary
# CARGO_INSTALL_ROOT put first on PATH, so the user's own ~/.cargo/bin is left alone), and
# the examples then call that `owl`. A block fails when any of its commands fails
# (bash -e, pipefail). The blocks share one model store, empty at the start (OWL_HOME).
# A block preceded by `<!-- readme-test: skip: REASON -->` is not run
# and the reason is printed; only the test command itself is marked so.
#
#   scripts/readme-test.sh [README]     (default: README.md)
#
# Ends with the line `readme: N passed, N failed, N skipped`; exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
readme="${1:-README.md}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CARGO_INSTALL_ROOT="$work/cargo-root"
export PATH="$CARGO_INSTALL_ROOT/bin:$PATH"
# A reader starts with an empty model store: the main command must pull what it needs.
export OWL_HOME="$work/owl-home"

# Split the README into numbered block files: blocks/N.sh, with blocks/N.line (its first
# line number) and blocks/N.skip (the reason) where it is marked.
mkdir -p "$work/blocks"
awk -v dir="$work/blocks" '
  /^<!-- readme-test: skip: .* -->$/ { reason = $0; sub(/^<!-- readme-test: skip: /, "", reason); sub(/ -->$/, "", reason); pending = reason; next }
  !inblock && /^```sh$/ { n++; inblock = 1; file = sprintf("%s/%03d", dir, n); print NR > (file ".line");
                          if (pending != "") print pending > (file ".skip"); pending = ""; printf "" > (file ".sh"); next }
  inblock && /^```$/ { inblock = 0; next }
  inblock { print > (file ".sh"); next }
  NF { pending = "" }
' "$readme"

passed=0 failed=0 skipped=0
for block in "$work"/blocks/*.sh; do
  base="${block%.sh}"
  line="$(cat "$base.line")"
  first="$(head -n 1 "$block")"
  if [ -f "$base.skip" ]; then
    echo "readme: SKIP $readme:$line ($first): $(cat "$base.skip")"
    skipped=$((skipped + 1))
    continue
  fi
  echo "readme: RUN  $readme:$line ($first)"
  if timeout 1800 bash -euo pipefail "$block" >"$base.out" 2>&1 </dev/null; then
    passed=$((passed + 1))
    echo "readme: ok   $readme:$line"
  else
    status=$?
    failed=$((failed + 1))
    echo "readme: FAILED $readme:$line (exit $status); its output:"
    sed 's/^/    /' "$base.out" | tail -n 40
  fi
done
echo "readme: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
