# Sourced by the benchmarks that run VMs in a network namespace of their own
# (agent.sh, net.sh, speed.sh): goes to the repository root, then
#
#   bench_setup WORK_NAME NS_NAME [VM...]
#
# builds the release binaries and the static guest, sets $bin (the release
# directory), $work (a scratch directory /var/tmp/ignis-WORK_NAME.XXXXXX) and
# $ns (the namespace ignis-NS_NAME-PID, made with lo up), exports IGNIS_ROOT
# (a state root under $work) and imports Debian's kernel
# (IGNIS_BENCH_KERNEL_DEB, else scripts/kernel-deb.sh) as the default. On
# exit, the VMs named are removed, bench_cleanup runs (the script's own, if
# it defines one), then the namespace and $work are removed.

cd "$(dirname "${BASH_SOURCE[0]}")/.."

in_ns() { ip netns exec "$ns" "$@"; }

bench_setup() {
  cargo build --release -q -p ignis-cli -p ignis-testkit
  scripts/build-guest.sh >/dev/null
  bin=$PWD/target/release
  work=$(mktemp -d "/var/tmp/ignis-$1.XXXXXX")
  ns=ignis-$2-$$
  bench_vms=("${@:3}")
  export IGNIS_ROOT=$work/root
  trap bench_exit EXIT
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  "$bin/ignis" kernel import "${IGNIS_BENCH_KERNEL_DEB:-$(scripts/kernel-deb.sh target/kernel)}" --default >/dev/null
}

bench_exit() {
  if [ ${#bench_vms[@]} -gt 0 ]; then
    in_ns "$bin/ignis" rm -f "${bench_vms[@]}" >/dev/null 2>&1 || true
  fi
  if declare -F bench_cleanup >/dev/null; then bench_cleanup; fi
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
