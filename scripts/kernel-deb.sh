#!/usr/bin/env bash
# Prints the path of Debian's current linux-image-amd64 kernel package,
# downloading it once per machine into DIR (default: IGNIS_KERNEL_CACHE, else
# /var/cache/ignis-test as root, else ~/.cache/ignis-test), not per clone.
# Runs `apt-get update` (as root) when the metapackage does not resolve: a
# missing package list must not turn the kernel tiers into skips.
set -euo pipefail
default=/var/cache/ignis-test
[ "$(id -u)" = 0 ] || default="${XDG_CACHE_HOME:-$HOME/.cache}/ignis-test"
dir=${1:-${IGNIS_KERNEL_CACHE:-$default}}
mkdir -p "$dir"
resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
pkg=$(resolve)
if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >&2
  pkg=$(resolve)
fi
[ -n "$pkg" ] || { echo "cannot resolve linux-image-amd64 (run apt-get update as root)" >&2; exit 1; }
deb=$(ls "$dir"/"$pkg"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  # apt-get download writes into the current directory; a partial file
  # never takes the final name.
  tmp=$(mktemp -d "$dir/.download.XXXXXX")
  chmod 755 "$tmp" # apt-get downloads as _apt where it can
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download "$pkg" >&2) || { echo "apt-get download $pkg failed" >&2; exit 1; }
  mv "$tmp"/"$pkg"_*.deb "$dir"/
  deb=$(ls "$dir"/"$pkg"_*.deb | head -n1)
fi
realpath "$deb"
