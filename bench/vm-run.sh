#!/usr/bin/env bash
# Benchmark: `ignis run -d` (create + start, returns when the guest init
# reports the workload started) next to the raw VMM started by hand with the
# same kernel, initramfs and disks (time to the same ready line), for each
# backend this host has. Prints a table with the ratio (target <= 1.15x).
#
#   bench/vm-run.sh [RUNS]          (default 5)
#   IGNIS_BENCH_KERNEL_DEB=...deb   (default: scripts/kernel-deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -q -p ignis-cli -p ignis-testkit
scripts/build-guest.sh >/dev/null
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/ignis-bench.XXXXXX)
export IGNIS_ROOT=$work/root
cleanup() { "$bin/ignis" rm -f $("$bin/ignis" ps -a -Q 2>/dev/null) >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

deb=${IGNIS_BENCH_KERNEL_DEB:-$(scripts/kernel-deb.sh target/kernel)}
"$bin/ignis" kernel import "$deb" --default >/dev/null
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
"$bin/ignis-mkimage" "$work/rootfs" "$work/layout" bench/app:1 /bin/busybox sleep 600 >/dev/null
"$bin/ignis" image import "$work/layout" >/dev/null

backends=()
info=$("$bin/ignis" info -o json)
echo "$info" | grep -q '"qemu": "' && backends+=(qemu)
if echo "$info" | grep -q '"firecracker": \['; then
  if echo "$info" | grep -q '"state": "usable"'; then
    backends+=(firecracker)
  else
    # KVM that cannot run Linux (nested PVM): Firecracker's mechanics with
    # the tiny test guest (its ready line at once, no Linux boot).
    "$bin/ignis-testguest" "$work/testguest.elf"
    "$bin/ignis" kernel import "$work/testguest.elf" --name testguest >/dev/null
    backends+=(firecracker+testguest)
  fi
fi

raw_ready() { # plan.json backend vm-dir -> seconds to the ready line
  python3 - "$1" "$2" "$3" <<'PY'
import json, subprocess, sys, time, os, tempfile
plan = json.load(open(sys.argv[1])); backend = sys.argv[2]; vmdir = sys.argv[3]
if backend == "qemu":
    argv = plan["argv"]
else:
    cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(plan["firecrackerConfig"], cfg); cfg.close()
    # Its own log off stdout (the console), as ignis does.
    argv = [os.environ.get("IGNIS_FIRECRACKER", "firecracker"), "--no-api", "--config-file", cfg.name, "--level", "Off"]
t0 = time.monotonic()
p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=vmdir)
for line in p.stdout:
    if b"IGNIS-INIT ready" in line:
        break
print(f"{time.monotonic() - t0:.4f}")
p.kill(); p.wait()
PY
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

printf '\n%-22s %5s %22s %22s %8s\n' backend runs "ignis run -> ready (s)" "raw VMM -> ready (s)" ratio
for b in "${backends[@]}"; do
  it=(); rt=(); extra=()
  [[ $b == *+testguest ]] && extra=(--kernel testguest --memory 128MB)
  backend=${b%+testguest}
  for i in $(seq "$runs"); do
    t0=$(date +%s.%N)
    id=$("$bin/ignis" run -d --backend "$backend" "${extra[@]}" bench/app:1)
    t1=$(date +%s.%N)
    it+=("$(awk "BEGIN{print $t1 - $t0}")")
    "$bin/ignis" rm -f "$id" >/dev/null
  done
  rawid=$("$bin/ignis" create --backend "$backend" "${extra[@]}" --name raw bench/app:1)
  "$bin/ignis" __boot-plan raw > "$work/plan.json"
  for i in $(seq "$runs"); do rt+=("$(raw_ready "$work/plan.json" "$backend" "$IGNIS_ROOT/vms/$rawid")"); done
  "$bin/ignis" rm -f raw >/dev/null
  mi=$(median "${it[@]}"); mr=$(median "${rt[@]}")
  printf '%-22s %5s %22.3f %22.3f %7.2fx\n' "$b" "$runs" "$mi" "$mr" "$(awk "BEGIN{print $mi / $mr}")"
done
[ ${#backends[@]} -gt 0 ] || echo "no backend available on this host"
