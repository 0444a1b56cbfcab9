#!/usr/bin/env bash
# Builds the static guest init (target/x86_64-unknown-linux-gnu/release/ignis-init),
# which ignis packs into every VM's initramfs. glibc static (crt-static):
# the only Rust target this toolchain has is x86_64-unknown-linux-gnu.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p ignis-init --target x86_64-unknown-linux-gnu
echo "${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/ignis-init"
