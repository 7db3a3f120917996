#!/usr/bin/env bash
# Cross-compiles owl-kernels for aarch64-unknown-linux-gnu and runs its lib tests under
# qemu-user, on an x86-64 Debian host. For developing the NEON kernels without an Arm box.
#
#   scripts/aarch64-test.sh                      # all owl-kernels lib tests
#   scripts/aarch64-test.sh -- --nocapture NAME  # extra args go to `cargo test`
#   OWL_FIXTURES=/work/shared/fixtures scripts/aarch64-test.sh --test it -- --skip matmul_panel_demo_shapes
#                                                # also the integration tests (~2.5 min under qemu;
#                                                # the skipped one runs > 5 min there)
#
# rustup cannot download the aarch64 std here, so std is built from source (-Zbuild-std,
# unlocked on a stable rustc with RUSTC_BOOTSTRAP=1). The library sources must be those of
# the very rustc that compiles them: they come from Debian's `rust-src` package of the same
# upstream version (trixie-backports / sid carry one per Rust release). The package conflicts
# with rustup, so it is not installed: it is downloaded with a private apt state under the
# cache dir and only its library/ is unpacked, next to a hard-linked copy of the rustup
# toolchain (a sysroot rustc and cargo recognise: lib/rustlib/src/rust/library).
#
# Idempotent: apt packages and the sysroot are set up only when missing.
# Env: OWL_AARCH64_TOOLCHAIN (rustup toolchain, default 1.95.0, must be a stable release),
#      OWL_AARCH64_CACHE (default ~/.cache/owl/aarch64-toolchain),
#      CARGO_TARGET_DIR (default target/aarch64-cross).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

toolchain=${OWL_AARCH64_TOOLCHAIN:-1.95.0}
cache=${OWL_AARCH64_CACHE:-$HOME/.cache/owl/aarch64-toolchain}
target=aarch64-unknown-linux-gnu

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { printf '[aarch64-test] %s\n' "$*" >&2; }

# 1. Cross linker, aarch64 glibc, qemu-user (bookworm's are enough).
missing=()
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user zstd; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. A sysroot = the rustup toolchain + Debian's rust-src of the same version.
tc_sysroot=$(rustup run "$toolchain" rustc --print sysroot) || {
  say "rustup toolchain '$toolchain' is not installed"; exit 1; }
version=$("$tc_sysroot/bin/rustc" -vV | sed -n 's/^release: //p')
if [[ ! $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  say "toolchain '$toolchain' is rustc $version; Debian only ships sources of stable releases"; exit 1
fi
sysroot=$cache/$version/sysroot
if [ ! -e "$cache/$version/.complete" ]; then
  say "building a sysroot for rustc $version in $cache/$version"
  rm -rf "$cache/$version"
  mkdir -p "$sysroot" "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial"
  cat > "$cache/apt/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
EOF
  apt_opts=(-o "Dir::Etc::SourceList=$cache/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
            -o Dir::State::Status=/dev/null -o APT::Architectures::=amd64
            -o Acquire::Languages=none -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -qq
  deb_version=$(apt-cache "${apt_opts[@]}" madison rust-src | awk -F' *\\| *' -v v="$version" \
                'index($2, v "+") == 1 { print $2; exit }')
  if [ -z "$deb_version" ]; then
    say "Debian has no rust-src for $version; versions there:"
    apt-cache "${apt_opts[@]}" madison rust-src >&2
    exit 1
  fi
  say "downloading rust-src $deb_version"
  (cd "$cache/$version" && apt-get "${apt_opts[@]}" download "rust-src=$deb_version")
  mkdir -p "$sysroot/lib/rustlib/src/rust"
  dpkg-deb --fsys-tarfile "$cache/$version"/rust-src_*.deb \
    | tar -x -C "$cache/$version" --wildcards "./usr/src/rustc-$version/library/*"
  mv "$cache/$version/usr/src/rustc-$version/library" "$sysroot/lib/rustlib/src/rust/library"
  rm -rf "$cache/$version/usr" "$cache/$version"/rust-src_*.deb
  # Hard links, not symlinks: rustc finds its sysroot from the real path of its binaries.
  for d in bin lib libexec; do
    [ -e "$tc_sysroot/$d" ] || continue
    cp -al "$tc_sysroot/$d" "$sysroot/" 2>/dev/null || cp -a "$tc_sysroot/$d" "$sysroot/"
  done
  [ "$("$sysroot/bin/rustc" --print sysroot)" = "$sysroot" ] || {
    say "rustc in $sysroot does not take it as its sysroot"; exit 1; }
  touch "$cache/$version/.complete"
fi

# 3. Build std for aarch64 and run the lib tests under qemu.
export RUSTC="$sysroot/bin/rustc"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/aarch64-cross}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
unset RUSTC_WRAPPER RUSTUP_TOOLCHAIN
say "rustc $version, std from source, tests under $(qemu-aarch64 --version | head -n1)"
exec "$sysroot/bin/cargo" test -Zbuild-std --target "$target" -p owl-kernels --lib --locked "$@"
