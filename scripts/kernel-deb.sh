#!/usr/bin/env bash
# Downloads Debian's current linux-image-amd64 kernel package into DIR
# (default target/kernel) and prints the .deb's path. Cached.
set -euo pipefail
dir=${1:-target/kernel}
mkdir -p "$dir"
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { echo "cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
deb=$(ls "$dir"/"$pkg"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  (cd "$dir" && apt-get download "$pkg" >/dev/null 2>&1)
  deb=$(ls "$dir"/"$pkg"_*.deb | head -n1)
fi
realpath "$deb"
