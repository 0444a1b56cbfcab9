#!/usr/bin/env bash
# Benchmark (root): ignis next to the raw VMM it drives, in one run, for
# every backend this host has (Firecracker + the test guest where
# `firecracker` is on PATH; QEMU always): run -> ready, snapshot (and the
# guest's pause), fork 1/10/50, restore, ignis's own memory per idle VM at
# 50 VMs, and `ps` over 1000 VM records. Prints one table with ratios and
# whether each goal is met, the phase timings behind them, and writes both
# to bench/results/speed.md.
#
# Everything runs in a network namespace this script creates and removes
# (its own bridge and nftables table): the host's are never touched.
#
#   bench/speed.sh [RUNS]              (default 9 for Firecracker rows, 3 for QEMU rows)
#   IGNIS_BENCH_KERNEL_DEB=...deb      (default: scripts/kernel-deb.sh)
#   IGNIS_BENCH_SKIP=qemu|firecracker  (leave a backend out)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench/speed.sh needs root (network namespace, jailer, TAPs)" >&2; exit 1; }
. "$(dirname "$0")/lib.sh"
bench_cleanup() {
  in_ns "$bin/ignis" rm -f $("$bin/ignis" ps -a -Q 2>/dev/null) >/dev/null 2>&1 || true
  pkill -f "$work/" 2>/dev/null || true
}
bench_setup speed speed

"$bin/ignis-testguest" --idle "$work/testguest.elf"
"$bin/ignis" kernel import "$work/testguest.elf" --name testguest >/dev/null
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/"
ln -s busybox "$work/rootfs/bin/sh"
"$bin/ignis-mkimage" "$work/rootfs" "$work/layout" bench/idle:1 /bin/busybox sleep 1000000 >/dev/null
"$bin/ignis" image import "$work/layout" >/dev/null

mkdir -p bench/results
BIN=$bin WORK=$work RUNS=${1:-} in_ns python3 bench/speed.py | tee bench/results/speed.md
