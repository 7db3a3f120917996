#!/usr/bin/env bash
# The whole test suite: `cargo fmt --check` and `cargo clippy -D warnings`, then every
# crate's tests with the optimised test profile (they fetch the demo models into the cache
# on first use, through owl-test).
# With no arguments it then runs every shell example of README.md as a user would
# (scripts/readme-test.sh: a release build, `cargo install --path crates/owl-cli` into a
# temporary root, then each example), and the NEON kernels' tests: owl-kernels cross-built
# for aarch64 and run under qemu-user (scripts/aarch64-test.sh; needs an x86-64 Debian
# host, which it sets up idempotently). Arguments go to `cargo test` and skip those steps.
set -euo pipefail
cd "$(dirname "$0")/.."
# House rules first (issue #19): one format, no clippy warnings.
cargo fmt --all --check
rustfmt --check --edition 2021 fuzz/fuzz_targets/*.rs
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast "$@"
if (($#)); then
  exit 0
fi
scripts/readme-test.sh
if [ "$(uname -m)" = x86_64 ] && command -v apt-get >/dev/null; then
  scripts/aarch64-test.sh
else
  echo "NOTE: the NEON kernel tests did not run: they need an x86-64 Debian host (cross toolchain, qemu-user)." >&2
fi
