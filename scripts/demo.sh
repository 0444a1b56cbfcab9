#!/usr/bin/env bash
# Demo on a fresh Debian 12 machine (as root): installs dependencies, builds
# ignis, starts a throwaway registry on 127.0.0.1, builds an image from
# busybox, pushes it, pulls it with ignis, imports Debian's kernel as the
# default kernel, and shows the results. State goes to a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
echo "==> cargo build --release (and the static guest init)"
cargo build --release -q
scripts/build-guest.sh >/dev/null
export PATH="$PWD/target/release:$PATH"
work=$(mktemp -d /tmp/ignis-demo.XXXXXX)
export IGNIS_ROOT="$work/root"
trap '[ -n "${reg_pid:-}" ] && kill "$reg_pid" 2>/dev/null; echo "(demo state left in $work)"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 & reg_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

echo "==> building an image from busybox-static and pushing it to 127.0.0.1:$port"
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/busybox"
for app in sh echo ls cat; do ln -sf busybox "$work/rootfs/bin/$app"; done
echo "hello from ignis" > "$work/rootfs/etc/motd"
ignis-mkimage "$work/rootfs" "$work/layout" "127.0.0.1:$port/demo/busybox:1" /bin/sh -c 'cat /etc/motd'
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout" "docker://127.0.0.1:$port/demo/busybox:1"

echo "==> ignis image pull"
ignis --insecure-registry "127.0.0.1:$port" image pull "127.0.0.1:$port/demo/busybox:1"
ignis image ls
echo "==> the image disk (ext4, built without mount or loop device):"
debugfs -R "cat /etc/motd" "$(ignis image ls --format '{{.DiskPath}}' | head -n1)" 2>/dev/null

echo "==> ignis kernel import (Debian linux-image-amd64 via apt)"
ignis kernel import apt:linux-image-amd64 --default
ignis kernel ls

echo "==> ignis info"
ignis info
echo "==> ignis run --rm (a real Linux VM: Debian's kernel, ignis-init, the busybox image)"
ignis run --rm "127.0.0.1:$port/demo/busybox:1" /bin/busybox sh -c 'echo "hello from $(hostname), kernel $(uname -r)"; exit 3' || echo "(exit code $? came back from the VM)"
echo "==> a detached VM: ps, logs, stop, rm"
ignis run --name demo-vm "127.0.0.1:$port/demo/busybox:1" /bin/busybox sleep 600
ignis ps
ignis stop demo-vm
ignis ps -a
ignis rm demo-vm
