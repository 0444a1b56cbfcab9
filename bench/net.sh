#!/usr/bin/env bash
# Benchmark (root): host -> VM TCP throughput and latency through a published
# port (nftables DNAT) next to the raw TAP path (the VM's own address), in a
# network namespace this script creates and removes. Prints a table.
#
#   bench/net.sh [SIZE_MB] [REQUESTS]      (default 32 MB, 50 requests)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
size=${1:-32}; reqs=${2:-50}
export IGNIS_NETWORK=bridge
bench_setup netbench bench bench-web
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
