#!/usr/bin/env bash
# Benchmark: N VM manifests applied at once (`ignis apply -f DIR`, which
# converges VMs in parallel, 8 at a time) until all run, next to N
# sequential `ignis run -d`. Backend: the fake VMM (default: measures the
# manager, not a guest), or BACKEND=qemu (a busybox app image under this
# host's QEMU; keep N small under TCG). Prints a table with the ratio.
#
#   bench/apply.sh [N]              (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}; backend=${BACKEND:-fake}
cargo build --release -q -p ignis-cli -p ignis-testkit --features ignis-cli/fake-vmm
scripts/build-guest.sh >/dev/null
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/ignis-applybench.XXXXXX)
export IGNIS_ROOT=$work/root IGNIS_NETWORK=none
cleanup() { "$bin/ignis" rm -f $("$bin/ignis" ps -a -Q 2>/dev/null) >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin/ignis" kernel import "${IGNIS_BENCH_KERNEL_DEB:-$(scripts/kernel-deb.sh target/kernel)}" --default >/dev/null
mkdir -p "$work/rootfs/bin"; cp /bin/busybox "$work/rootfs/bin/"
"$bin/ignis-mkimage" "$work/rootfs" "$work/layout" bench/app:1 /bin/busybox sleep 1000000 >/dev/null
"$bin/ignis" image import "$work/layout" >/dev/null
mkdir -p "$work/m"
for i in $(seq "$n"); do
  cat > "$work/m/vm$i.yaml" <<Y
apiVersion: ignis.dev/v1alpha1
kind: VM
metadata: {name: m$i}
spec: {image: "bench/app:1", backend: $backend, memory: 128MB, diskSize: 64MB, network: {mode: none}}
Y
done
t0=$(date +%s.%N)
"$bin/ignis" apply -f "$work/m" >/dev/null
t1=$(date +%s.%N)
running=$("$bin/ignis" ps -q -Q | wc -l)
"$bin/ignis" rm -f $("$bin/ignis" ps -a -Q) >/dev/null
t2=$(date +%s.%N)
for i in $(seq "$n"); do
  "$bin/ignis" run -d --backend "$backend" --memory 128MB --size 64MB --name "r$i" bench/app:1 >/dev/null
done
t3=$(date +%s.%N)
apply=$(awk "BEGIN{print $t1 - $t0}"); seq_s=$(awk "BEGIN{print $t3 - $t2}")
printf '\n%-44s %12s\n' "backend $backend, N=$n" "seconds"
printf '%-44s %12.2f\n' "apply -f (all converged, $running running)" "$apply"
printf '%-44s %12.2f\n' "N sequential ignis run -d" "$seq_s"
printf '%-44s %11.2fx\n' "ratio apply / sequential" "$(awk "BEGIN{print $apply / $seq_s}")"
