#!/usr/bin/env bash
# Benchmark (root): host -> VM TCP throughput and latency through a published
# port (nftables DNAT) next to the raw TAP path (the VM's own address), in a
# network namespace this script creates and removes. Prints a table.
#
#   bench/net.sh [SIZE_MB] [REQUESTS]      (default 32 MB, 50 requests)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-32}; reqs=${2:-50}
cargo build --release -q -p ignis-cli -p ignis-testkit
scripts/build-guest.sh >/dev/null
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/ignis-netbench.XXXXXX)
ns=ignis-bench-$$
export IGNIS_ROOT=$work/root IGNIS_NETWORK=bridge
cleanup() {
  ip netns exec "$ns" "$bin/ignis" rm -f bench-web >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
"$bin/ignis" kernel import "${IGNIS_BENCH_KERNEL_DEB:-$(scripts/kernel-deb.sh target/kernel)}" --default >/dev/null
mkdir -p "$work/rootfs/bin"; cp /bin/busybox "$work/rootfs/bin/"
"$bin/ignis-mkimage" "$work/rootfs" "$work/layout" bench/web:1 >/dev/null
"$bin/ignis" image import "$work/layout" >/dev/null
ip netns exec "$ns" "$bin/ignis" run --name bench-web -p 8080:80 bench/web:1 /bin/busybox sh -c \
  "/bin/busybox mkdir -p /srv && /bin/busybox dd if=/dev/zero of=/srv/big bs=1M count=$size 2>/dev/null && echo ok > /srv/small && /bin/busybox httpd -f -p 80 -h /srv" >/dev/null
vm_ip=$("$bin/ignis" inspect bench-web -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["network"]["ip"])')
for _ in $(seq 100); do ip netns exec "$ns" curl -sf -m 2 "http://$vm_ip/small" >/dev/null && break; sleep 0.3; done

measure() { # url -> "MB/s ms_per_request"
  local url=$1 t
  t=$(ip netns exec "$ns" curl -s -o /dev/null -w '%{time_total}' "$url/big")
  local mbs; mbs=$(awk "BEGIN{print $size / $t}")
  local t0 t1; t0=$(date +%s.%N)
  for _ in $(seq "$reqs"); do ip netns exec "$ns" curl -s -o /dev/null "$url/small"; done
  t1=$(date +%s.%N)
  echo "$mbs $(awk "BEGIN{print ($t1 - $t0) * 1000 / $reqs}")"
}
read -r raw_mbs raw_ms < <(measure "http://$vm_ip")
read -r pub_mbs pub_ms < <(measure "http://127.0.0.1:8080")
printf '\n%-34s %14s %18s\n' path "MB/s (${size}MB)" "ms/request (n=$reqs)"
printf '%-34s %14.1f %18.1f\n' "raw TAP (VM address)" "$raw_mbs" "$raw_ms"
printf '%-34s %14.1f %18.1f\n' "published port (-p 8080:80, DNAT)" "$pub_mbs" "$pub_ms"
printf '%-34s %13.2fx %17.2fx\n' "ratio published / raw" "$(awk "BEGIN{print $pub_mbs / $raw_mbs}")" "$(awk "BEGIN{print $pub_ms / $raw_ms}")"
echo "(per-request time includes curl and ip-netns process start on the host)"
