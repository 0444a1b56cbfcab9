#!/usr/bin/env bash
# Prints the path of a Debian 12 root filesystem tarball with cloud-init
# (and systemd, udev, openssh-server), built once per machine with
# debootstrap from the Debian mirror apt uses into DIR (default:
# IGNIS_KERNEL_CACHE, else /var/cache/ignis-test as root), not per clone.
# The cloud-init live test (crates/ignis-cli/tests/cloud_init.rs) imports it
# as an image. Needs root (debootstrap); scripts/deps.sh installs it.
set -euo pipefail
dir=${1:-${IGNIS_KERNEL_CACHE:-/var/cache/ignis-test}}
# Bump when the recipe changes: a new name, so an old tarball is not used.
name=debian12-cloudinit-v1.tar
out=$dir/$name
if [ -s "$out" ]; then
  realpath "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "building $name needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
mirror=$(awk '/^URIs:/{print $2; exit} /^deb /{print $2; exit}' \
  /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.cloudinit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
echo "==> debootstrap bookworm with cloud-init from $mirror (a few minutes, once)" >&2
# python3-cffi-backend by name: debootstrap's resolver does not follow the
# virtual packages python3-cryptography depends on.
debootstrap --variant=minbase \
  --include=systemd-sysv,udev,cloud-init,python3-cffi-backend,openssh-server,iproute2,ifupdown \
  bookworm "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
  { tail -n 30 "$tmp/debootstrap.log" "$root/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }
# NoCloud first: no minutes spent probing cloud metadata services that
# are not there (what Debian's own nocloud images configure too).
cat >"$root/etc/cloud/cloud.cfg.d/90-ignis.cfg" <<'EOF'
datasource_list: [NoCloud, None]
EOF
# Smaller: documentation, manuals, locales and apt's caches.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
  "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
# No host keys baked into the image (each VM's sshd makes its own).
rm -f "$root"/etc/ssh/ssh_host_*
tar --numeric-owner --xattrs -C "$root" -cf "$tmp/$name" .
mv "$tmp/$name" "$out"
realpath "$out"
