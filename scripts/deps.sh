#!/usr/bin/env bash
# Installs what ignis, its tests and the demo need on a fresh Debian 12
# (run as root). Idempotent: skips what is already there.
set -euo pipefail
pkgs=(
  # the tests and the live tiers
  e2fsprogs zstd curl nftables iproute2 skopeo docker-registry busybox-static qemu-system-x86
  ca-certificates dropbear-bin openssh-client git cpio procps
  # the cloud-init live test's Debian image (scripts/cloud-image.sh)
  debootstrap
  # CNI networks (the standard plugins; nsenter for the CNI live tests)
  containernetworking-plugins util-linux
  # building: the static guest init (gcc, libc6-dev), git2's TLS
  build-essential libssl-dev pkg-config
  # the demo (a free port); the API conformance test's venv
  python3 python3-venv
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The API conformance test: schemathesis (PyPI), pinned, in its own venv
# beside the kernel cache (IGNIS_SCHEMATHESIS names another `st`).
st_version=4.32.5
st_venv=/var/cache/ignis-test/schemathesis
if [ "$("$st_venv/bin/st" --version 2>/dev/null)" != "st, version $st_version" ]; then
  echo "==> schemathesis $st_version into $st_venv"
  rm -rf "$st_venv"
  mkdir -p "$(dirname "$st_venv")"
  python3 -m venv "$st_venv"
  "$st_venv/bin/pip" install -q "schemathesis==$st_version"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-nextest"
  cargo install --locked cargo-nextest
fi
