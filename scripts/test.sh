#!/usr/bin/env bash
# The whole test suite: fetches the demo models into the cache on first use (the tests
# do that through owl-test), then runs every crate's tests with the optimised test profile.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked --no-fail-fast "$@"
