#!/usr/bin/env bash
# Benchmark: `ignis image import` of an image of a few hundred MB, next to
# what it fundamentally has to do, `tar -x` + `mkfs.ext4 -d`, on the same
# layer in the same run. Prints a table with the ratio.
#
#   bench/image-import.sh [SOURCE_DIR] [RUNS]     (default /usr/bin, 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-/usr/bin}
runs=${2:-3}
cargo build --release -q
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/ignis-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "building an image from $src ..." >&2
"$bin/ignis-mkimage" "$src" "$work/layout" bench/image:1 >/dev/null
layer=$(ls -S "$work/layout/blobs/sha256" | head -n1)
layer="$work/layout/blobs/sha256/$layer"
tree_mb=$(du -sm "$src" | cut -f1)
layer_mb=$(( $(stat -c %s "$layer") / 1000000 ))

now() { date +%s.%N; }
ignis_times=(); base_times=()
for i in $(seq "$runs"); do
  rm -rf "$work/root" "$work/x" "$work/disk.ext4"; sync
  t0=$(now)
  IGNIS_ROOT="$work/root" "$bin/ignis" -q image import "$work/layout" >/dev/null
  t1=$(now)
  mkdir "$work/x"
  tar -xzf "$layer" -C "$work/x"
  size_k=$(( $(du -sk "$work/x" | cut -f1) * 5 / 4 + 65536 ))
  truncate -s "${size_k}k" "$work/disk.ext4"
  mkfs.ext4 -q -F -O ^has_journal -d "$work/x" "$work/disk.ext4" >/dev/null
  t2=$(now)
  ignis_times+=("$(awk "BEGIN{print $t1 - $t0}")")
  base_times+=("$(awk "BEGIN{print $t2 - $t1}")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mi=$(median "${ignis_times[@]}"); mb=$(median "${base_times[@]}")
printf '\nimage: %s MB tree, %s MB gzip layer, %s runs (median)\n\n' "$tree_mb" "$layer_mb" "$runs"
printf '%-50s %10s\n' "operation" "seconds"
printf '%-50s %10.2f\n' "ignis image import (verify+store+unpack+ext4)" "$mi"
printf '%-50s %10.2f\n' "tar -xzf + mkfs.ext4 -d (baseline)" "$mb"
printf '%-50s %9.2fx\n' "ratio ignis / baseline" "$(awk "BEGIN{print $mi / $mb}")"
